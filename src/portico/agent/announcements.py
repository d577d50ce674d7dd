"""What this node may announce in layer 2, and what a Service's status says about it (pure).

A VIP is announced in layer 2 from this node when an L2Advertisement selects both (its pool by name,
this node by labels). It is *ready* here when this node's rules for it are in place and, under
externalTrafficPolicy Local, one of them has a ready local endpoint — announcing a VIP this node
cannot serve is how peers black-hole traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from portico.announce.announcer import L2Vip
from portico.api.v1alpha1 import L2AdvertisementSpec
from portico.dataplane.model import FrontendPolicy
from portico.ipam.blocks import IPAddress
from portico.ipam.selectors import selector_matches

ANNOUNCED = "portico.io/Announced"  # the Service condition agents keep


@dataclass(frozen=True)
class VipOwners:
    pool: str
    services: tuple[str, ...]  # namespace/name


def l2_vips(node: str, *, labels: Mapping[str, str], default_interface: str | None,
            advertisements: Iterable[L2AdvertisementSpec], allocations: Mapping[IPAddress, VipOwners],
            policies_of: Callable[[IPAddress], list[FrontendPolicy]], is_local: Callable[[str], bool],
            ) -> dict[IPAddress, L2Vip]:
    """The VIPs this node may answer for (with no interface to answer on, none: see `advertisement_problems`).
    `policies_of(vip)`: the frontends this node has applied for it; `is_local(service)`: its ETP is Local."""
    mine = [a for a in advertisements if selector_matches(a.nodeSelector, labels)]
    out: dict[IPAddress, L2Vip] = {}
    if not mine:
        return out
    for vip, owners in allocations.items():
        ads = [a for a in mine if not a.ipPools or owners.pool in a.ipPools]
        if not ads:
            continue
        interfaces = sorted({i for a in ads for i in (a.interfaces or ([default_interface] if default_interface
                                                                          else []))})
        if not interfaces:
            continue
        policies = policies_of(vip)
        ready: str | None = None
        if not policies:
            ready = f"{node} has no rules for {vip}"
        elif any(is_local(p.service) for p in policies) and not any(p.backends for p in policies):
            ready = f"no ready local endpoint on {node} (externalTrafficPolicy Local)"
        out[vip] = L2Vip(vip, owners.services, tuple(interfaces), ready)
    return out


def advertisement_problems(node: str, labels: Mapping[str, str], default_interface: str | None,
                           advertisement: L2AdvertisementSpec, interface_state: Callable[[str], str]) -> list[str]:
    """What keeps this node from answering where the advertisement says (for a Warning event on it)."""
    if not selector_matches(advertisement.nodeSelector, labels):
        return []
    if not advertisement.interfaces and default_interface is None:
        return [f"{node} has no interface holding its InternalIP to answer on"]
    return [f"interface {i} does not exist on {node}" for i in advertisement.interfaces
            if interface_state(i) == "missing"]


def announced_condition(vips: Iterable[IPAddress], owners: Mapping[IPAddress, str | None]
                        ) -> tuple[bool, str, str]:
    """(status, reason, message) of the Service's `portico.io/Announced` condition; the same on every node
    that sees the same owners."""
    vips = sorted(vips, key=lambda a: (a.version, int(a)))
    nobody = [str(v) for v in vips if owners.get(v) is None]
    if nobody:
        return (False, "NoEligibleNode", f"no node may announce {', '.join(nobody)}: none is alive with its rules "
                "in place, the interface up and, under externalTrafficPolicy Local, a ready local endpoint")
    return True, "Layer2", "; ".join(f"{v} by {owners[v]} (ARP/NDP)" for v in vips)
