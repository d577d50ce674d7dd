"""The forwarding consumer: the changed Services' desired frontends -> the kernel's `portico` table, incrementally.

It owns what is programmed: the applied frontends (per Service and per VIP, which is what the announcers
read: a VIP is announced only where its rules are), what this node cannot do for each Service (reported as
Events and in the node's report), and the UDP flows to forget once new rules are in. It reads the caches and
calls nothing upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from portico.agent.caches import AgentCaches
from portico.agent.desired import gateway_frontends, service_frontends
from portico.announce.links import interface_with_address
from portico.dataplane.conntrack import StaleFlows, forget, stale_flows
from portico.dataplane.model import Frontend, FrontendPolicy
from portico.dataplane.nft import Nft
from portico.dataplane.nftables import NODE, Ruleset, node_fragment, render_frontend
from portico.dataplane.syncer import Syncer, SyncResult
from portico.health.checks import NOBODY, ByNode
from portico.ipam.blocks import IPAddress
from portico.kube.events import EventRecorder
from portico.kube.informer import object_key

log = logging.getLogger(__name__)


class Forwarding:
    def __init__(self, node: str, nft: Nft, events: EventRecorder, *,
                 down_for: Callable[[str], ByNode] = lambda service: NOBODY,
                 dead_nodes: Callable[[], frozenset[str]] = frozenset,
                 gated_for: Callable[[str], ByNode] = lambda service: NOBODY) -> None:
        self.node = node
        self.down_for = down_for  # the health view: endpoints the monitors took out, by Service
        self.gated_for = gated_for  # endpoints whose Portico readiness gate waits for the rules, by Service
        self.dead_nodes = dead_nodes  # the liveness view: nodes whose endpoints are out of rotation
        self.events = events
        self.syncer = Syncer(nft)
        self.applied: dict[Frontend, tuple[str, FrontendPolicy]] = {}  # frontend -> (Service key, policy)
        self.frontends_of: dict[IPAddress, set[Frontend]] = {}  # VIP -> its applied frontends
        self.problems: dict[str, list[str]] = {}  # Service key -> what was last reported
        self.data_path_ok = False  # the last sync succeeded (the first one is always full)
        self.default_interface: str | None = None  # the one holding this node's InternalIP
        self._served_families: set[int] = {4, 6}
        self._stale_flows: list[StaleFlows] = []  # UDP flows to endpoints removed since the last sync

    async def sync(self, caches: AgentCaches, dirty: set[str], node_dirty: bool, heartbeat_port: int) -> SyncResult:
        """Program these Services (and the node's own part, if it changed). Raises when the kernel refused even
        a full sync; then `data_path_ok` is False."""
        replacements: dict[object, Ruleset | None] = {}
        if node_dirty:
            replacements[NODE] = node_fragment(caches.pod_cidrs(), heartbeat_port,
                                               [address for address, _ in caches.peers().values()])
            address = caches.internal_ip()
            self.default_interface = interface_with_address(str(address)) if address is not None else None
            families = caches.families()
            if families != self._served_families:  # rare: re-evaluate every Service
                self._served_families = families
                dirty |= set(self.problems) | {key for key, _ in self.applied.values()}
        for key in dirty:
            replacements.update(self._service_replacements(caches, key))
        try:
            result = await self.syncer.sync(replacements)
        except Exception:
            self.data_path_ok = False
            raise
        self.data_path_ok = True
        for fe, error in result.refused.items():
            self._leave_out(caches, fe, error)
        return result

    async def forget_stale_flows(self) -> None:
        """Only after a sync: until the new rules are in, a datagram would recreate the entries."""
        stale, self._stale_flows = self._stale_flows, []
        await forget(stale)

    def policies_of(self, vip: IPAddress) -> list[FrontendPolicy]:
        return [self.applied[fe][1] for fe in self.frontends_of.get(vip, ())]

    def service_of(self, fe: Frontend) -> str | None:
        held = self.applied.get(fe)
        return held[0] if held else None

    def _service_replacements(self, caches: AgentCaches, key: str) -> dict[object, Ruleset | None]:
        svc: Any = caches.services.cache.get(key)
        vips = caches.vips_of.get(svc.metadata.uid, set()) if svc is not None else set()
        wanted: dict[Frontend, FrontendPolicy] = {}
        problems: list[str] = []
        if svc is not None and vips:
            served = self._served_families
            unserved = sorted(str(a) for a in vips if a.version not in served)
            if unserved:
                problems.append(f"node {self.node} has no IPv{6 if 4 in served else 4} address: "
                                f"{', '.join(unserved)} not served from this node")
            vips = {a for a in vips if a.version in served}
            ordered = sorted(vips, key=lambda a: (a.version, int(a)))
            if caches.gateway_api.served_by_haproxy(svc):  # HAProxy's on this node, not DNATed to pods
                built = gateway_frontends(svc, ordered)
            else:
                built = service_frontends(svc, ordered, caches.slices_for(key), self.node, caches.policy_of.get(key),
                                          down=self.down_for(key), gated=self.gated_for(key),
                                          dead_nodes=self.dead_nodes())
            wanted, problems = built.frontends, problems + built.problems
        out: dict[object, Ruleset | None] = {}
        for fe, (owner, old) in list(self.applied.items()):
            if owner == key and fe not in wanted:
                del self.applied[fe]
                self.frontends_of[fe.vip].discard(fe)
                out[fe] = None
                self._stale_flows += stale_flows(fe, old.backends, ())
        for fe, policy in wanted.items():
            held = self.applied.get(fe)
            if held is not None and held[0] != key:
                problems.append(f"{fe} is already served for {held[0]}; not for this Service")
                continue
            if held is None or held[1] != policy:
                if held is not None:
                    self._stale_flows += stale_flows(fe, held[1].backends, policy.backends)
                self.applied[fe] = (key, policy)
                self.frontends_of.setdefault(fe.vip, set()).add(fe)
                out[fe] = render_frontend(fe, policy)
        if svc is None:
            self.problems.pop(key, None)
        else:
            self._report(svc, problems)
        return out

    def _leave_out(self, caches: AgentCaches, fe: object, error: str) -> None:
        """The kernel refused this frontend's rules: it is not applied (so its VIP is not announced for it here)
        and its Service is told; the next change to the Service tries again."""
        if not isinstance(fe, Frontend) or (held := self.applied.pop(fe, None)) is None:
            log.error("the kernel refused %s: %s", fe, error)
            return
        self.frontends_of[fe.vip].discard(fe)
        svc = caches.services.cache.get(held[0])
        if svc is not None:
            self._report(svc, [*self.problems.get(held[0], []), f"the kernel refused the rules for {fe}, which is "
                               f"not served from node {self.node}: {_nft_error(error)}"])

    def _report(self, svc: Any, problems: list[str]) -> None:
        key = object_key(svc)
        if self.problems.get(key, []) == problems:
            return
        self.problems[key] = problems
        for problem in problems:
            log.warning("%s: %s", key, problem)
            self.events.record(svc, type="Warning", reason="ForwardingProblem", message=problem)


def _nft_error(text: str) -> str:
    """nft's complaint, without the statements it quotes: "Could not process rule: Operation not supported"."""
    reasons = [line.split("Error: ", 1)[1] for line in text.splitlines() if "Error: " in line]
    return "; ".join(dict.fromkeys(reasons))[:300] or text[:300]
