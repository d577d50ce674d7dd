"""Local delivery of Gateway addresses to HAProxy on this node: a policy route for marked packets.

The VIP is on no interface (on a shared segment that would make the node answer ARP for it whatever the
announcer decides), so the kernel would forward its packets on. nftables marks every packet of a Gateway's
frontends (the `deliver-local` chain); this rule sends marked packets to a table whose only route says every
address is local, so they reach HAProxy's sockets, bound `transparent` to the VIP. Replies leave from those
sockets with the VIP as source, as any locally generated packet does.
"""

from __future__ import annotations

import json
import logging
import subprocess

log = logging.getLogger(__name__)

DELIVERY_MARK = 0x100000  # one bit of the packet mark; kube-proxy uses 0x4000 and 0x8000
DELIVERY_TABLE = 2100
RULE_PRIORITY = 100  # before the main table (32766) and the local one's usual place (0) is left alone
DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}


def rule_args(family: int) -> list[str]:
    return [f"-{family}", "rule", "add", "fwmark", f"{DELIVERY_MARK:#x}/{DELIVERY_MARK:#x}", "lookup",
            str(DELIVERY_TABLE), "priority", str(RULE_PRIORITY)]


def route_args(family: int) -> list[str]:
    return [f"-{family}", "route", "replace", "local", DEFAULT_ROUTE[family], "dev", "lo", "table", str(DELIVERY_TABLE)]


def _ip(netns: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["-n", netns] if netns else []
    return subprocess.run(["ip", *where, *args], capture_output=True, text=True, check=False)


def _has_rule(family: int, netns: str | None) -> bool:
    out = _ip(netns, "-j", f"-{family}", "rule", "show", "table", str(DELIVERY_TABLE)).stdout
    return bool(out.strip()) and bool(json.loads(out))


def ensure_local_delivery(families: tuple[int, ...] = (4, 6), netns: str | None = None) -> list[str]:
    """Install (idempotently) the rule and route for each family; what failed, as messages (a node without
    IPv6 cannot have the IPv6 route, and its IPv4 Gateways still work). `netns`: for tests."""
    problems = []
    for family in families:
        commands = [route_args(family)] + ([] if _has_rule(family, netns) else [rule_args(family)])
        for args in commands:
            done = _ip(netns, *args)
            if done.returncode != 0:
                problems.append(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return problems


def remove_local_delivery(families: tuple[int, ...] = (4, 6), netns: str | None = None) -> None:
    for family in families:
        delete = rule_args(family)
        delete[2] = "del"
        while _has_rule(family, netns) and _ip(netns, *delete).returncode == 0:
            pass
        _ip(netns, f"-{family}", "route", "flush", "table", str(DELIVERY_TABLE))
