"""What this node may announce, in layer 2 and over BGP, and what a Service's status says about it (pure).

A VIP is announced from this node when an L2Advertisement (or BGPAdvertisement) selects both (its pool
by name, this node by labels). It is *ready* here when this node's rules for it are in place and,
under externalTrafficPolicy Local, one of them has a ready local endpoint — announcing a VIP this node
cannot serve is how peers black-hole traffic. In layer 2 one ready node answers (the agents rank
them); over BGP every ready node advertises it and the router spreads flows over them (ECMP).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from portico.announce.announcer import L2Vip
from portico.announce.bgp import Prefix, Route, Session
from portico.api.v1alpha1 import BGPAdvertisementSpec, BGPPeerSpec, L2AdvertisementSpec
from portico.dataplane.model import FrontendPolicy
from portico.ipam.blocks import IPAddress
from portico.ipam.selectors import selector_matches

# A node with this label (any value) takes no external load-balancer traffic, as for every cloud provider.
EXCLUDE_FROM_LOAD_BALANCERS = "node.kubernetes.io/exclude-from-external-load-balancers"


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
        out[vip] = L2Vip(vip, owners.services, tuple(interfaces),
                         excluded(node, labels) or unready(node, vip, policies_of, is_local))
    return out


def excluded(node: str, labels: Mapping[str, str]) -> str | None:
    """Why this node announces nothing (an operator's decision), or None."""
    if EXCLUDE_FROM_LOAD_BALANCERS in labels:
        return f"{node} is excluded from external load balancers (label {EXCLUDE_FROM_LOAD_BALANCERS})"
    return None


def unready(node: str, vip: IPAddress, policies_of: Callable[[IPAddress], list[FrontendPolicy]],
            is_local: Callable[[str], bool]) -> str | None:
    """Why this node cannot serve `vip` now, or None when it can."""
    policies = policies_of(vip)
    if not policies:
        return f"{node} has no rules for {vip}"
    if all(p.withdraw for p in policies):
        return f"no healthy backend for {vip}, and its TrafficPolicy says Withdraw"
    # Terminating endpoints still take traffic that arrives, but do not keep a node in rotation (as kube-proxy's
    # health check node port fails for them), so a rollout drains the node's share to the others.
    if any(is_local(p.service) for p in policies) and not any(p.backends and not p.terminating for p in policies):
        return f"no ready local endpoint on {node} (externalTrafficPolicy Local)"
    return None


def bgp_sessions(labels: Mapping[str, str], peers: Mapping[str, BGPPeerSpec], passwords: Mapping[str, str],
                 ) -> tuple[dict[str, Session], dict[str, str]]:
    """The sessions this node opens (one per BGPPeer selecting it), and why others are not opened (by peer):
    two BGPPeers for one address on one node cannot both be sessions — the first by name wins."""
    sessions: dict[str, Session] = {}
    problems: dict[str, str] = {}
    by_address: dict[IPAddress, str] = {}
    for name, spec in sorted(peers.items()):
        if not selector_matches(spec.nodeSelector, labels):
            continue
        address = ipaddress.ip_address(spec.peerAddress)
        if address in by_address:
            problems[name] = f"BGPPeer {by_address[address]} already peers with {address} from this node"
            continue
        if spec.passwordSecret is not None and name not in passwords:
            ref = spec.passwordSecret
            problems[name] = f"password Secret {ref.namespace}/{ref.name} (key {ref.key}) is missing"
            continue
        by_address[address] = name
        sessions[name] = Session(name, address, spec.peerASN, spec.myASN, spec.peerPort, spec.holdTime,
                                 spec.keepaliveTime, passwords.get(name, ""), spec.ebgpMultiHop)
    return sessions, problems


def bgp_routes(node: str, *, labels: Mapping[str, str], advertisements: Iterable[BGPAdvertisementSpec],
               sessions: Mapping[str, Session], allocations: Mapping[IPAddress, VipOwners],
               policies_of: Callable[[IPAddress], list[FrontendPolicy]], is_local: Callable[[str], bool],
               data_path_ok: bool) -> tuple[dict[Prefix, Route], dict[IPAddress, str]]:
    """The routes this node advertises now, and why each VIP it would advertise is withheld.

    A VIP goes to the sessions of its address family that its BGPAdvertisements name (all when they name
    none), as a /32 (/128) or its aggregate. Attributes of several advertisements for one VIP merge
    (communities joined, the highest LOCAL_PREF): GoBGP holds one path per prefix. An aggregate is
    advertised while any VIP inside is ready here."""
    mine = [a for a in advertisements if selector_matches(a.nodeSelector, labels)]
    routes: dict[Prefix, Route] = {}
    withheld: dict[IPAddress, str] = {}
    if not mine or not sessions:
        return routes, withheld
    for vip, owners in allocations.items():
        ads = [a for a in mine if not a.ipPools or owners.pool in a.ipPools]
        peers = frozenset(name for a in ads for name, s in sessions.items()
                          if s.address.version == vip.version and (not a.peers or name in a.peers))
        if not peers:
            continue
        reason = excluded(node, labels) or (unready(node, vip, policies_of, is_local) if data_path_ok
                                            else f"{node}'s last rule sync failed")
        if reason is not None:
            withheld[vip] = reason
            continue
        for ad in ads:
            length = ad.aggregationLength if vip.version == 4 else ad.aggregationLengthV6
            prefix = ipaddress.ip_network(f"{vip}/{length}", strict=False)
            ad_peers = frozenset(p for p in peers if not ad.peers or p in ad.peers)
            if not ad_peers:
                continue
            held = routes.get(prefix)
            if held is not None:
                ad_peers |= held.peers
                communities = tuple(sorted({*held.communities, *ad.communities}))
                local_pref = max((p for p in (held.local_pref, ad.localPref) if p is not None), default=None)
            else:
                communities, local_pref = tuple(sorted(set(ad.communities))), ad.localPref
            routes[prefix] = Route(prefix, ad_peers, communities, local_pref)
    return routes, withheld


def advertisement_problems(node: str, labels: Mapping[str, str], default_interface: str | None,
                           advertisement: L2AdvertisementSpec, interface_state: Callable[[str], str]) -> list[str]:
    """What keeps this node from answering where the advertisement says (for a Warning event on it)."""
    if not selector_matches(advertisement.nodeSelector, labels):
        return []
    if not advertisement.interfaces and default_interface is None:
        return [f"{node} has no interface holding its InternalIP to answer on"]
    return [f"interface {i} does not exist on {node}" for i in advertisement.interfaces
            if interface_state(i) == "missing"]
