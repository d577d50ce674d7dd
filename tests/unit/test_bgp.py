"""Pure parts of BGP announcement: which sessions and routes a node wants, path attributes, session status
messages, BFD's packets and state machine, and the lab router's configuration."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portico.agent.announcements import VipOwners, bgp_routes, bgp_sessions
from portico.agent.bgp import session_message, since_up
from portico.announce import bfd
from portico.announce.bgp import Route, Session, SessionState, community_values, path_of, router_id
from portico.announce.gobgpapi import attribute_pb2
from portico.api.v1alpha1 import BGPAdvertisementSpec, BGPPeerSpec, LabelSelector, SecretKeyRef
from portico.controller.node_reports import selection_condition
from portico.dataplane.model import Backend, FrontendPolicy
from portico.dev.router import bird_config
from portico.dev.topology import plan_lab
from portico.ipam.blocks import IPAddress

V4 = ipaddress.ip_address("198.18.100.129")
V4_OTHER = ipaddress.ip_address("198.18.100.130")
V6 = ipaddress.ip_address("fd00:198:18:f00::81")
PEERS = {"r4": BGPPeerSpec(peerAddress="198.18.0.2", peerASN=64512, myASN=64512),
         "r6": BGPPeerSpec(peerAddress="fd00:198:18::2", peerASN=64512, myASN=64512)}


# -- sessions ---------------------------------------------------------------------------------------------
def test_a_node_opens_a_session_with_each_peer_that_selects_it() -> None:
    peers = {**PEERS, "zone-b": BGPPeerSpec(peerAddress="198.18.0.3", peerASN=65000, myASN=64512,
                                            nodeSelector=LabelSelector(matchLabels={"zone": "b"}))}
    sessions, problems = bgp_sessions({"zone": "a"}, peers, {})
    assert set(sessions) == {"r4", "r6"} and problems == {}
    assert sessions["r4"] == Session("r4", ipaddress.ip_address("198.18.0.2"), 64512, 64512)


def test_two_peers_with_one_address_or_a_missing_password_are_problems_not_sessions() -> None:
    peers = {**PEERS, "r4-again": BGPPeerSpec(peerAddress="198.18.0.2", peerASN=1, myASN=2),
             "locked": BGPPeerSpec(peerAddress="198.18.0.5", peerASN=1, myASN=2,
                                   passwordSecret=SecretKeyRef(name="s"))}
    sessions, problems = bgp_sessions({}, peers, {})
    assert set(sessions) == {"r4", "r6"}
    assert problems == {"r4-again": "BGPPeer r4 already peers with 198.18.0.2 from this node",
                        "locked": "password Secret portico-system/s (key password) is missing"}
    sessions, problems = bgp_sessions({}, peers, {"locked": "pw"})
    assert sessions["locked"].password == "pw" and "locked" not in problems


# -- routes -------------------------------------------------------------------------------------------------
def policies(ready: dict[IPAddress, tuple[str, ...]]) -> dict[IPAddress, list[FrontendPolicy]]:
    return {vip: [FrontendPolicy("default/svc", tuple(Backend(ipaddress.ip_address(b), 80) for b in backends))]
            for vip, backends in ready.items()}


def routes_for(ads: list[BGPAdvertisementSpec], *, rules: dict[IPAddress, tuple[str, ...]] | None = None,
               local: bool = False, ok: bool = True, labels: dict[str, str] | None = None,
               ) -> tuple[dict[ipaddress.IPv4Network | ipaddress.IPv6Network, Route], dict[IPAddress, str]]:
    sessions, _ = bgp_sessions({}, PEERS, {})
    applied = policies(rules if rules is not None else {V4: ("198.19.1.3",), V4_OTHER: ("198.19.1.3",),
                                                         V6: ("198.19.1.3",)})
    allocations = {v: VipOwners("bgp", ("default/svc",)) for v in (V4, V4_OTHER, V6)}
    return bgp_routes("node-1", labels=labels or {}, advertisements=ads, sessions=sessions,
                      allocations=allocations, policies_of=lambda v: applied.get(v, []),
                      is_local=lambda _: local, data_path_ok=ok)


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_each_ready_vip_is_a_host_route_to_the_sessions_of_its_family() -> None:
    routes, withheld = routes_for([BGPAdvertisementSpec(ipPools=["bgp"], communities=["64512:100"], localPref=200)])
    assert routes == {
        net("198.18.100.129/32"): Route(net("198.18.100.129/32"), frozenset({"r4"}), ("64512:100",), 200),
        net("198.18.100.130/32"): Route(net("198.18.100.130/32"), frozenset({"r4"}), ("64512:100",), 200),
        net("fd00:198:18:f00::81/128"): Route(net("fd00:198:18:f00::81/128"), frozenset({"r6"}), ("64512:100",),
                                              200),
    }
    assert withheld == {}
    assert routes_for([BGPAdvertisementSpec(ipPools=["other"])]) == ({}, {})
    assert routes_for([BGPAdvertisementSpec(nodeSelector=LabelSelector(matchLabels={"zone": "b"}))],
                      labels={"zone": "a"}) == ({}, {})


def test_a_vip_this_node_cannot_serve_is_withheld_with_the_reason() -> None:
    routes, withheld = routes_for([BGPAdvertisementSpec()], rules={V4: ()}, local=True)
    assert routes == {}
    assert withheld == {V4: "no ready local endpoint on node-1 (externalTrafficPolicy Local)",
                        V4_OTHER: "node-1 has no rules for 198.18.100.130", V6: "node-1 has no rules for "
                        "fd00:198:18:f00::81"}
    _, withheld = routes_for([BGPAdvertisementSpec()], ok=False)
    assert set(withheld.values()) == {"node-1's last rule sync failed"}
    routes, withheld = routes_for([BGPAdvertisementSpec()],
                                  labels={"node.kubernetes.io/exclude-from-external-load-balancers": "true"})
    assert routes == {} and set(withheld.values()) == {"node-1 is excluded from external load balancers (label "
                                                       "node.kubernetes.io/exclude-from-external-load-balancers)"}


def test_aggregation_and_merged_attributes_of_several_advertisements() -> None:
    ads = [BGPAdvertisementSpec(aggregationLength=24, communities=["64512:1"], localPref=100, peers=["r4"]),
           BGPAdvertisementSpec(aggregationLength=24, communities=["no-export", "64512:1"], localPref=300)]
    routes, _ = routes_for(ads)
    aggregate = routes[net("198.18.100.0/24")]  # both VIPs, one prefix
    assert aggregate == Route(net("198.18.100.0/24"), frozenset({"r4"}), ("64512:1", "no-export"), 300)
    assert routes[net("fd00:198:18:f00::81/128")].peers == frozenset({"r6"})
    # The aggregate stays while any VIP inside is ready.
    routes, withheld = routes_for(ads, rules={V4: ("198.19.1.3",)})
    assert net("198.18.100.0/24") in routes and set(withheld) == {V4_OTHER, V6}


def test_an_advertisement_naming_peers_sends_only_to_them() -> None:
    routes, _ = routes_for([BGPAdvertisementSpec(peers=["r6"])])
    assert set(routes) == {net("fd00:198:18:f00::81/128")}  # IPv4 VIPs have no IPv4 session to go to


# -- attributes and identity ------------------------------------------------------------------------------
def test_communities_of_every_form() -> None:
    standard, large = community_values(("64512:100", "no-export", "blackhole", "65000:1:2"))
    assert standard == [64512 << 16 | 100, 0xFFFFFF01, 0xFFFF029A]
    assert [(c.global_admin, c.local_data1, c.local_data2) for c in large] == [(65000, 1, 2)]


def test_a_path_leaves_the_next_hop_to_the_session_and_carries_its_attributes() -> None:
    path = path_of(Route(net("fd00:198:18:f00::81/128"), frozenset({"r6"}), ("64512:7",), 150))
    kinds = {a.TypeName().split(".")[-1]: a for a in path.pattrs}
    assert set(kinds) == {"OriginAttribute", "MpReachNLRIAttribute", "CommunitiesAttribute", "LocalPrefAttribute"}
    reach = attribute_pb2.MpReachNLRIAttribute()
    kinds["MpReachNLRIAttribute"].Unpack(reach)
    assert list(reach.next_hops) == ["::"]
    v4 = path_of(Route(net("198.18.100.129/32"), frozenset({"r4"})))
    hop = attribute_pb2.NextHopAttribute()
    next(a for a in v4.pattrs if a.Is(hop.DESCRIPTOR)).Unpack(hop)
    assert hop.next_hop == "0.0.0.0" and len(v4.pattrs) == 2


def test_router_id_is_the_ipv4_address_or_stable_per_name() -> None:
    assert router_id(ipaddress.ip_address("198.18.0.11"), "node-1") == "198.18.0.11"
    assert router_id(ipaddress.ip_address("fd00::1"), "node-1") == router_id(None, "node-1")
    assert router_id(None, "node-1") != router_id(None, "node-2")


def test_session_messages_say_what_to_check() -> None:
    peer, address = "r4", ipaddress.ip_address("198.18.0.2")
    assert session_message(SessionState(peer, address, "Established", 0, 1), None, "Up") == (
        "Established", "1 route advertised; BFD Up")
    assert session_message(SessionState(peer, address, "Active", 2, 0), None)[1].startswith(
        "the session was refused (2 NOTIFICATIONs exchanged since it was last up): check peerASN")
    assert "the password" in session_message(SessionState(peer, address, "Active"), None)[1]
    assert session_message(None, "password Secret x is missing") == ("NotConfigured", "password Secret x is missing")


def test_refusals_count_from_the_last_time_the_session_was_up() -> None:
    address = ipaddress.ip_address("198.18.0.2")
    up, base = since_up(SessionState("r4", address, "Established", 3), 0)
    assert (up.notifications, base) == (0, 3)  # earlier flaps' Cease messages are history
    down, base = since_up(SessionState("r4", address, "Active", 5), base)
    assert (down.notifications, base) == (2, 3)
    remade, base = since_up(SessionState("r4", address, "Active", 1), base)  # a new gobgpd peer counts from 0
    assert (remade.notifications, base) == (1, 0)


# -- BFD ----------------------------------------------------------------------------------------------------
def bfd_session(disc: int = 7) -> bfd.BfdSession:
    return bfd.BfdSession(disc, desired_min_tx_us=100_000, required_min_rx_us=100_000, detect_mult=3)


def test_two_bfd_sessions_come_up_by_the_three_way_handshake_and_speed_up() -> None:
    a, b = bfd_session(1), bfd_session(2)
    assert a.packet().desired_min_tx_us == bfd.SLOW_TX_US  # slow while not up
    for _ in range(3):
        for sender, receiver in ((a, b), (b, a)):
            packet = bfd.decode(sender.packet().encode())
            assert packet is not None
            receiver.receive(packet, now=1.0)
    assert (a.state, b.state) == (bfd.UP, bfd.UP)
    assert a.packet().desired_min_tx_us == 100_000 and a.packet().poll  # a poll sequence confirms the change
    assert b.receive(a.packet(), now=1.0)  # a poll asks for a final at once
    a.receive(b.packet(final=True), now=1.0)
    assert not a.poll
    assert a.detection_time() == pytest.approx(0.3)


def test_silence_longer_than_the_detection_time_takes_the_session_down() -> None:
    a, b = bfd_session(1), bfd_session(2)
    a.state, a.remote_discriminator, a.last_rx = bfd.UP, 2, 10.0
    a.remote_detect_mult, a.remote_desired_tx_us = 3, 100_000
    a.check_expiry(10.29)
    assert a.state == bfd.UP
    a.check_expiry(10.31)
    assert (a.state, a.diag, a.remote_discriminator) == (bfd.DOWN, bfd.DIAG_EXPIRED, 0)
    b.state = bfd.UP
    b.receive(bfd.Packet(bfd.DOWN, 1, 2, 1_000_000, 100_000, 3), now=1.0)  # the peer says down
    assert (b.state, b.diag) == (bfd.DOWN, bfd.DIAG_NEIGHBOR_DOWN)


def test_a_packet_for_another_session_is_ignored() -> None:
    a = bfd_session(1)
    a.receive(bfd.Packet(bfd.DOWN, 9, 12345, 1_000_000, 100_000, 3), now=1.0)
    assert a.remote_discriminator == 0 and a.state == bfd.DOWN


@given(st.binary(max_size=64))
def test_bfd_decode_never_raises(data: bytes) -> None:
    packet = bfd.decode(data)
    assert packet is None or packet.my_discriminator != 0


def test_a_bfd_packet_round_trips_and_invalid_ones_are_discarded() -> None:
    packet = bfd.Packet(bfd.UP, 1, 2, 100_000, 100_000, 3, poll=True)
    assert bfd.decode(packet.encode()) == packet
    assert bfd.decode(bfd.Packet(bfd.UP, 1, 0, 1, 1, 3).encode()) is None  # Up without knowing us
    assert bfd.decode(bfd.Packet(bfd.DOWN, 0, 0, 1, 1, 3).encode()) is None  # no discriminator
    assert bfd.decode(bfd.Packet(bfd.DOWN, 1, 0, 1, 1, 0).encode()) is None  # multiplier 0


# -- the lab router -----------------------------------------------------------------------------------------
def test_the_lab_router_peers_with_every_node_on_both_families_with_bfd_and_ecmp() -> None:
    config = bird_config(plan_lab(3))
    for n in (1, 2, 3):
        assert f"protocol bgp node_{n}_v4 from lab_node {{ neighbor 198.18.0.{10 + n} as 64512; }}" in config
        assert f"neighbor fd00:198:18::{10 + n:x} as 64512" in config
    assert config.count("merge paths yes") == 2 and "bfd on;" in config and 'password "portico-lab"' in config


# -- node selection -----------------------------------------------------------------------------------------
def test_a_selector_matching_no_node_is_a_false_condition_and_matches_are_listed() -> None:
    nodes = {f"node-{i}": {"rack": "a" if i % 2 else "b"} for i in range(1, 14)}
    assert selection_condition(LabelSelector(matchLabels={"rack": "c"}), nodes) == (
        False, "NoNodeSelected", "nodeSelector matches no node: nothing is announced for this object")
    assert selection_condition(LabelSelector(matchLabels={"rack": "b"}), nodes) == (
        True, "NodesSelected", "6 nodes: node-10, node-12, node-2, node-4, node-6, node-8")
    status, _, message = selection_condition(None, nodes)
    assert status and message.startswith("13 nodes: node-1, node-10,") and message.endswith(" and 3 more")
