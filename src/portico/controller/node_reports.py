"""Every node's report (its PorticoNode) -> what users read on Services, BGPPeers and L2Advertisements (pure).

Agents write only their own PorticoNode; this module is how their facts become status, written by the
controller alone. One subtlety: a node that died cannot take its claims back, so a node counts as down
when a peer reported not hearing it *after* the node's own last report (in the order the controller
received them, never by comparing clocks); a down node's claims are left out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from portico.api.v1alpha1 import LabelSelector, PorticoNodeStatus
from portico.ipam.blocks import IPAddress
from portico.ipam.selectors import selector_matches

ANNOUNCED = "portico.io/Announced"  # on Services
FORWARDING = "portico.io/Forwarding"  # on Services, while some node cannot forward for it
NODES_SELECTED = "NodesSelected"  # on L2Advertisements, BGPPeers, BGPAdvertisements
LISTED = 10  # nodes named in a message; the rest are counted


@dataclass(frozen=True)
class NodeReport:
    name: str
    status: PorticoNodeStatus
    received: int  # the order in which the controller received this version (larger: later)


@dataclass
class Views:
    """Per VIP, who answers for it in layer 2 and who advertises it over BGP (live nodes only)."""

    layer2: dict[IPAddress, list[str]] = field(default_factory=dict)
    bgp: dict[IPAddress, list[str]] = field(default_factory=dict)


def down_nodes(reports: Iterable[NodeReport]) -> set[str]:
    """Nodes a peer reported unreachable after their own last report."""
    reports = list(reports)
    by_name = {r.name: r for r in reports}
    return {name for r in reports for name in r.status.unreachable
            if name in by_name and name != r.name and r.received > by_name[name].received}


def announcement_views(reports: Iterable[NodeReport]) -> Views:
    reports = list(reports)
    down = down_nodes(reports)
    views = Views()
    for r in sorted(reports, key=lambda r: r.name):
        if r.name in down:
            continue
        for text in r.status.layer2:
            views.layer2.setdefault(ipaddress.ip_address(text), []).append(r.name)
        for text in r.status.bgp:
            views.bgp.setdefault(ipaddress.ip_address(text), []).append(r.name)
    return views


def announced_condition(vips: Iterable[IPAddress], views: Views, withdrawn: str | None = None,
                        ) -> tuple[bool, str, str]:
    """(status, reason, message) of a Service's `portico.io/Announced` condition. `withdrawn`: why its
    TrafficPolicy has every node withdraw it (no healthy backend, whenNoneHealthy Withdraw), if it does."""
    vips = sorted(vips, key=lambda a: (a.version, int(a)))
    nobody = [str(v) for v in vips if not views.layer2.get(v) and not views.bgp.get(v)]
    if nobody and withdrawn is not None:
        return False, "NoHealthyBackend", f"{', '.join(nobody)} withdrawn from every node: {withdrawn}"
    if nobody:
        return (False, "NoEligibleNode", f"no node may announce {', '.join(nobody)}: none is alive with its rules "
                "in place, its interface or BGP session up and, under externalTrafficPolicy Local, a ready local "
                "endpoint")
    parts = []
    for v in vips:
        ways = ([f"{', '.join(views.layer2[v])} (ARP/NDP)"] if views.layer2.get(v) else []) + (
            [f"{', '.join(views.bgp[v])} (BGP)"] if views.bgp.get(v) else [])
        parts.append(f"{v} by {' and '.join(ways)}")
    modes = {"Layer2" for v in vips if views.layer2.get(v)} | {"BGP" for v in vips if views.bgp.get(v)}
    return True, "And".join(sorted(modes, reverse=True)), "; ".join(parts)


def forwarding_problems(reports: Iterable[NodeReport]) -> dict[str, list[str]]:
    """Service -> "node: problem" for every node that cannot forward all of it."""
    out: dict[str, list[str]] = {}
    for r in sorted(reports, key=lambda r: r.name):
        for p in r.status.forwardingProblems:
            out.setdefault(p.service, []).append(f"{r.name}: {p.message}")
    return out


def peer_sessions(reports: Iterable[NodeReport]) -> dict[str, list[dict[str, str]]]:
    """BGPPeer -> its `status.sessions`, one entry per node with a session (or a reason for none)."""
    out: dict[str, list[dict[str, str]]] = {}
    for r in sorted(reports, key=lambda r: r.name):
        for s in r.status.bgpSessions:
            out.setdefault(s.peer, []).append({"node": r.name, "state": s.state, "message": s.message})
    return out


def advertisement_problems(reports: Iterable[NodeReport]) -> dict[str, list[dict[str, str]]]:
    """L2Advertisement -> its `status.problems`, one entry per node that cannot answer where it says."""
    out: dict[str, list[dict[str, str]]] = {}
    for r in sorted(reports, key=lambda r: r.name):
        for p in r.status.l2Problems:
            out.setdefault(p.advertisement, []).append({"node": r.name, "message": p.message})
    return out


def selection_condition(selector: LabelSelector | None, nodes: Mapping[str, Mapping[str, str]],
                        ) -> tuple[bool, str, str]:
    """(status, reason, message) of the `NodesSelected` condition, from every Node's labels."""
    matched = sorted(name for name, labels in nodes.items() if selector_matches(selector, labels))
    if not matched:
        return False, "NoNodeSelected", "nodeSelector matches no node: nothing is announced for this object"
    more = f" and {len(matched) - LISTED} more" if len(matched) > LISTED else ""
    return True, "NodesSelected", f"{len(matched)} node{'s' if len(matched) != 1 else ''}: " \
                                  f"{', '.join(matched[:LISTED])}{more}"
