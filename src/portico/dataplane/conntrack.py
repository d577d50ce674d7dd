"""Forgetting UDP flows to endpoints that are gone, as kube-proxy does.

A UDP "flow" is a conntrack entry that lives as long as datagrams keep coming: without this, a client
that keeps sending (DNS, games, VoIP, a probe) stays DNATed to a deleted pod forever — the VIP's
new rules never see its packets. TCP needs nothing: the dead pod's peer gets resets or times out.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from portico.dataplane.model import Backend, Frontend

log = logging.getLogger(__name__)

CONNTRACK_PROTOCOLS = ("udp", "sctp")  # connectionless enough to stick to a dead endpoint


@dataclass(frozen=True)
class StaleFlows:
    frontend: Frontend
    backend: Backend


def stale_flows(frontend: Frontend, before: tuple[Backend, ...], after: tuple[Backend, ...]) -> list[StaleFlows]:
    """The (frontend, endpoint) pairs whose flows must go (pure)."""
    if frontend.protocol not in CONNTRACK_PROTOCOLS:
        return []
    kept = {(b.ip, b.port) for b in after}
    return [StaleFlows(frontend, b) for b in before if (b.ip, b.port) not in kept]


async def forget(flows: list[StaleFlows]) -> None:
    """Delete their conntrack entries (`conntrack -D`; "0 flow entries" is not an error)."""
    for flow in flows:
        fe, be = flow.frontend, flow.backend
        family = "ipv4" if fe.vip.version == 4 else "ipv6"
        proc = await asyncio.create_subprocess_exec(
            "conntrack", "-D", "-f", family, "-p", fe.protocol, "--orig-dst", str(fe.vip),
            "--dport", str(fe.port), "--reply-src", str(be.ip), "--reply-port-src", str(be.port),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode not in (0, 1):  # 1: nothing matched
            log.warning("could not forget flows of %s to %s: %s", fe, be.name, err.decode().strip())
