"""Pure parts of announcement: frames, ranking, heartbeats, what a node may announce, stale UDP flows."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import time
from dataclasses import replace

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from portico.agent.announcements import (
    VipOwners,
    advertisement_problems,
    l2_vips,
)
from portico.announce import frames, ranking
from portico.announce.announcer import L2Vip
from portico.announce.heartbeat import (
    MAX_BEAT_BYTES,
    MAX_RESTART_HOLD,
    HeartbeatMesh,
    Peer,
    Rejected,
    Signer,
    decode_body,
    encode_body,
    open_sealed,
    usable_keys,
)
from portico.api.v1alpha1 import L2AdvertisementSpec, LabelSelector
from portico.dataplane.conntrack import StaleFlows, stale_flows
from portico.dataplane.model import Backend, Frontend, FrontendPolicy
from portico.ipam.blocks import IPAddress

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
V4, CLIENT4 = ipaddress.IPv4Address("198.18.0.240"), ipaddress.IPv4Address("198.18.0.100")
V6, CLIENT6 = ipaddress.IPv6Address("fd00:198:18::ff0"), ipaddress.IPv6Address("fd00:198:18::64")


# -- frames ---------------------------------------------------------------------------------------------
def test_an_arp_request_is_answered_with_our_mac_to_the_asker() -> None:
    request = frames.parse_arp_request(frames.arp_request(MAC_B, CLIENT4, V4))
    assert request == frames.Solicitation(V4, MAC_B, CLIENT4)
    reply = frames.arp_reply(MAC_A, request)
    assert reply[:6] == MAC_B  # unicast to the asker
    assert frames.parse_answer(reply) == (V4, MAC_A)
    assert frames.parse_arp_request(reply) is None


def test_gratuitous_arp_is_an_answer_and_not_a_question() -> None:
    garp = frames.gratuitous_arp(MAC_A, V4)
    assert garp[:6] == frames.BROADCAST
    assert frames.parse_answer(garp) == (V4, MAC_A)
    assert frames.parse_arp_request(garp) is None  # nobody answers a gratuitous ARP


def _icmpv6_checksum_ok(frame: bytes) -> bool:
    src, dst, body = frame[22:38], frame[38:54], frame[54:]
    pseudo = src + dst + struct.pack("!I3xB", len(body), frames.ICMPV6)
    return frames._checksum(pseudo + body) == 0


def test_a_neighbour_solicitation_is_answered_with_a_valid_solicited_override_advertisement() -> None:
    question = frames.neighbor_solicitation(MAC_B, CLIENT6, V6)
    assert question[:6] == bytes.fromhex("3333ff000ff0")  # the solicited-node group of ...::ff0
    assert _icmpv6_checksum_ok(question)
    request = frames.parse_neighbor_solicitation(question)
    assert request == frames.Solicitation(V6, MAC_B, CLIENT6)
    answer = frames.neighbor_advertisement(MAC_A, request)
    assert answer[:6] == MAC_B and answer[21] == frames.ND_HOP_LIMIT and _icmpv6_checksum_ok(answer)
    assert answer[58] == frames.NA_SOLICITED | frames.NA_OVERRIDE
    assert frames.parse_answer(answer) == (V6, MAC_A)


def test_duplicate_address_detection_is_answered_to_all_nodes_unsolicited() -> None:
    question = bytearray(frames.neighbor_solicitation(MAC_B, ipaddress.IPv6Address("::"), V6))
    request = frames.parse_neighbor_solicitation(bytes(question))
    assert request is not None and request.address == frames.ALL_NODES
    answer = frames.neighbor_advertisement(MAC_A, request)
    assert answer[:6] == frames.ALL_NODES_MAC and answer[58] == frames.NA_OVERRIDE  # S must be 0 to a group


def test_unsolicited_advertisement_goes_to_all_nodes_with_override() -> None:
    na = frames.unsolicited_advertisement(MAC_A, V6)
    assert na[:6] == frames.ALL_NODES_MAC and _icmpv6_checksum_ok(na) and na[58] == frames.NA_OVERRIDE
    assert frames.parse_answer(na) == (V6, MAC_A)


def test_a_forwarded_solicitation_is_ignored() -> None:
    question = bytearray(frames.neighbor_solicitation(MAC_B, CLIENT6, V6))
    question[21] = 254  # hop limit: it crossed a router
    assert frames.parse_neighbor_solicitation(bytes(question)) is None


@given(st.binary(max_size=120))
def test_parsers_never_raise_on_garbage(data: bytes) -> None:
    frames.parse_arp_request(data)
    frames.parse_neighbor_solicitation(data)
    frames.parse_answer(data)


# -- ranking --------------------------------------------------------------------------------------------
NODES = [f"node-{i}" for i in range(1, 8)]
VIPS = [ipaddress.ip_address(f"198.18.0.{i}") for i in range(200, 250)]


def test_every_node_computes_the_same_owner_whatever_the_order() -> None:
    assert ranking.owner("198.18.0.240", NODES) == ranking.owner("198.18.0.240", reversed(NODES))
    assert ranking.owner("198.18.0.240", []) is None


def test_ownership_spreads_over_nodes() -> None:
    owners = ranking.owners(VIPS, {n: frozenset(VIPS) for n in NODES})
    assert len(set(owners.values())) >= 5  # 50 VIPs over 7 nodes


@given(st.sampled_from(NODES))
def test_only_the_lost_nodes_vips_move(lost: str) -> None:
    before = ranking.owners(VIPS, {n: frozenset(VIPS) for n in NODES})
    after = ranking.owners(VIPS, {n: frozenset(VIPS) for n in NODES if n != lost})
    assert {v for v in VIPS if before[v] != after[v]} == {v for v in VIPS if before[v] == lost}


def test_a_node_not_eligible_for_a_vip_never_owns_it() -> None:
    owners = ranking.owners([V4], {"node-1": frozenset(), "node-2": frozenset({V4})})
    assert owners == {V4: "node-2"}
    assert ranking.owners([V4], {"node-1": frozenset()}) == {V4: None}


# -- heartbeats -----------------------------------------------------------------------------------------
KEY, OTHER_KEY = b"k" * 32, b"o" * 32
NODE2 = ipaddress.ip_address("198.18.0.12")


def test_a_beat_round_trips_both_families() -> None:
    beat, eligible, down = decode_body(encode_body("node-1", 7, 3, {V4, V6}))
    assert (beat.node, beat.boot, beat.seq, eligible, down) == ("node-1", 7, 3, frozenset({V4, V6}), None)
    sick = {"shop/web": frozenset({(ipaddress.ip_address("198.19.1.2"), 8080), (ipaddress.ip_address("fd00::2"), 0)})}
    gated = {"shop/api": frozenset({(ipaddress.ip_address("198.19.1.7"), 0)})}
    beat, _, view = decode_body(encode_body("node-1", 7, 4, (), health=3, down=sick, gated=gated))
    assert (beat.health, view) == (3, (sick, gated))


def test_a_beat_without_the_gated_set_still_decodes() -> None:
    """A peer from before the readiness gate sends a shorter beat: it reads as nothing gated."""
    old = msgspec.msgpack.encode(["node-1", 7, 4, b"", b"", 2, []])
    beat, _, view = decode_body(old)
    assert (beat.health, view) == (2, ({}, {}))


def test_a_truncated_or_foreign_body_is_refused() -> None:
    with pytest.raises(ValueError, match="truncated"):
        decode_body(msgspec.msgpack.encode(["node-1", 1, 1, b"\x01\x02\x03", b""]))
    with pytest.raises(msgspec.DecodeError):
        decode_body(b"GET / HTTP/1.1")


def test_a_sealed_beat_opens_only_under_its_key_and_untouched() -> None:
    body = encode_body("node-1", 7, 3, {V4})
    sealed = Signer([KEY], body).seal(echo=99, health_echo=5)
    assert open_sealed(sealed, [KEY]) == ((99, 5), body)
    assert open_sealed(sealed, [OTHER_KEY, KEY]) == ((99, 5), body)
    for data, keys, reason in [
            (sealed, [OTHER_KEY], "unauthenticated"),
            (sealed[:-1] + bytes([sealed[-1] ^ 1]), [KEY], "unauthenticated"),  # body changed
            (sealed[:37] + b"\x00" * 8 + sealed[45:], [KEY], "unauthenticated"),  # the echo changed
            (sealed[:45] + b"\x00" * 8 + sealed[53:], [KEY], "unauthenticated"),  # the health echo changed
            (sealed, [], "no-key"),
            (b"GET / HTTP/1.1\r\n", [KEY], "malformed"),
            (b"PTB2\x03" + sealed[5:], [KEY], "malformed"),  # more MACs than keys may be held
            (b"PTB1" + sealed[4:], [KEY], "malformed"),  # an older version
            (b"PT", [KEY], "malformed"),
            (sealed + b"x" * MAX_BEAT_BYTES, [KEY], "malformed")]:
        with pytest.raises(Rejected) as err:
            open_sealed(data, keys)
        assert err.value.reason == reason


def test_during_a_rotation_every_mix_of_old_and_new_keys_interoperates() -> None:
    body = encode_body("node-1", 1, 1, ())
    for sender, receiver in [([KEY], [KEY, OTHER_KEY]), ([KEY, OTHER_KEY], [KEY]), ([KEY, OTHER_KEY], [OTHER_KEY]),
                             ([OTHER_KEY], [KEY, OTHER_KEY])]:
        assert open_sealed(Signer(sender, body).seal(0), receiver)[1] == body
    assert usable_keys([b"short", KEY]) == ((KEY,), "keys shorter than 16 bytes are ignored")
    assert usable_keys([KEY, OTHER_KEY, b"x" * 40]) == ((KEY, OTHER_KEY), "only the first 2 keys are used")


def _mesh(changes: list[tuple[str, str]]) -> HeartbeatMesh:
    mesh = HeartbeatMesh("node-1", lambda peer, what: changes.append((peer, what)))
    mesh.keys = (KEY,)
    mesh.peers["node-2"] = Peer(NODE2, on_link=True)
    return mesh


def _beat(boot: int, seq: int, echo: int, eligible: set[IPAddress], node: str = "node-2", *, health: int = 0,
          down: dict[str, frozenset[tuple[IPAddress, int]]] | None = None,
          gated: dict[str, frozenset[tuple[IPAddress, int]]] | None = None, health_echo: int = 0,
          restart: int = 0) -> bytes:
    body = encode_body(node, boot, seq, eligible, health=health, down=down, gated=gated, restart=restart)
    return Signer([KEY], body).seal(echo, health_echo)


def _reason(mesh: HeartbeatMesh, data: bytes, source: str = "198.18.0.12", ttl: int | None = 255) -> str | None:
    try:
        mesh.receive(data, source, ttl)
    except Rejected as e:
        return e.reason
    return None


async def test_a_peer_is_believed_only_fresh_from_its_address_on_link_and_echoing_our_boot() -> None:
    changes: list[tuple[str, str]] = []
    mesh = _mesh(changes)
    assert _reason(mesh, _beat(10, 1, echo=0, eligible={V4})) == "unacknowledged"  # it has not heard us yet
    assert mesh.peers["node-2"].boot == 10 and not mesh.peers["node-2"].alive  # ... but our next beat echoes it
    assert _reason(mesh, _beat(10, 2, mesh.boot, {V4})) is None
    assert mesh.peers["node-2"].eligible == {V4} and changes == [("node-2", "came up")]
    assert _reason(mesh, _beat(10, 2, mesh.boot, {V4})) == "replayed"
    assert _reason(mesh, _beat(10, 3, mesh.boot, {V4}), source="198.18.0.99") == "unknown-peer"  # spoofed elsewhere
    assert _reason(mesh, _beat(10, 3, mesh.boot, {V4}, node="node-9")) == "unknown-peer"
    assert _reason(mesh, _beat(10, 3, mesh.boot, {V4}), ttl=64) == "ttl"  # routed here: not from our segment
    assert _reason(mesh, _beat(9, 50, mesh.boot, {V4})) == "replayed"  # an earlier incarnation
    mesh.peers["node-2"].on_link = False  # a peer behind a router: its TTL is not ours to expect
    assert _reason(mesh, _beat(10, 4, mesh.boot, set()), ttl=61) is None
    assert changes[-1] == ("node-2", "changed its VIPs")


async def test_a_restarted_receiver_refuses_replays_captured_before_it_started() -> None:
    """An attacker recorded node-2's beats to node-1; node-1 restarts (a new boot, no memory) and node-2 dies. The
    recording echoes node-1's old boot, so it brings nobody back to life."""
    old = _mesh([])
    recorded = [_beat(10, seq, old.boot, {V4}) for seq in range(1, 20)]
    restarted = _mesh([])
    restarted.boot = old.boot + 1
    assert {_reason(restarted, data) for data in recorded} == {"unacknowledged"}
    assert restarted.alive() == {}


async def test_a_restarted_peer_is_a_new_peer_once_it_echoes_us() -> None:
    changes: list[tuple[str, str]] = []
    mesh = _mesh(changes)
    mesh.receive(_beat(10, 5, mesh.boot, {V4}), "198.18.0.12", 255)
    assert _reason(mesh, _beat(20, 1, echo=0, eligible={V6})) == "unacknowledged"
    assert changes[-1] == ("node-2", "restarted") and mesh.alive() == {}  # its old incarnation's VIPs are gone
    assert _reason(mesh, _beat(20, 2, mesh.boot, {V6})) is None
    assert mesh.alive()["node-2"].eligible == {V6}


async def test_a_restarting_peer_keeps_its_vips_until_its_next_incarnation_is_ready() -> None:
    """An upgrade restarts node-2's agent: its last beat asks for a hold. Its silence, and its next incarnation's
    first beats (nothing eligible yet), move none of its VIPs; its first eligible set ends the hold."""
    changes: list[tuple[str, str]] = []
    mesh = _mesh(changes)
    mesh.dead_after = 0.05
    mesh.receive(_beat(10, 5, mesh.boot, {V4}), "198.18.0.12", 255)
    mesh.receive(_beat(10, 6, mesh.boot, {V4}, restart=300), "198.18.0.12", 255)
    await asyncio.sleep(0.15)  # three times the silence that makes a peer dead
    assert mesh.alive()["node-2"].eligible == {V4}
    assert _reason(mesh, _beat(20, 1, echo=0, eligible=set())) == "unacknowledged"
    assert "node-2" in mesh.alive()  # a new incarnation, yet still held: not expired as "restarted"
    assert _reason(mesh, _beat(20, 2, mesh.boot, set())) is None
    assert mesh.alive()["node-2"].eligible == {V4}  # not ready yet: the held set stands
    assert _reason(mesh, _beat(20, 3, mesh.boot, {V6})) is None
    assert mesh.alive()["node-2"].eligible == {V6} and mesh.peers["node-2"].hold_until == 0.0
    assert [what for _, what in changes] == ["came up", "changed its VIPs"]


async def test_a_restart_hold_ends_in_death_if_nothing_comes_back() -> None:
    changes: list[tuple[str, str]] = []
    mesh = _mesh(changes)
    mesh.dead_after = 0.05
    mesh.receive(_beat(10, 5, mesh.boot, {V4}), "198.18.0.12", 255)
    mesh.receive(_beat(10, 6, mesh.boot, {V4}, restart=200), "198.18.0.12", 255)
    await asyncio.sleep(0.1)
    assert "node-2" in mesh.alive()
    await asyncio.sleep(0.2)
    assert mesh.alive() == {} and changes[-1][1].startswith("silent for")
    changes.clear()  # a hold asked for beyond the maximum is cut to it
    mesh.receive(_beat(10, 7, mesh.boot, {V4}, restart=10**9), "198.18.0.12", 255)
    assert mesh.peers["node-2"].hold_until - time.monotonic() <= MAX_RESTART_HOLD


async def test_health_travels_until_acknowledged_and_dies_with_its_sender() -> None:
    heard: list[tuple[str, set[str]]] = []
    mesh = _mesh([])
    mesh.on_health = lambda peer, services: heard.append((peer, services))
    sick = {"shop/web": frozenset({(ipaddress.ip_address("198.19.2.5"), 8080)})}
    gated = {"shop/api": frozenset({(ipaddress.ip_address("198.19.2.6"), 0)})}
    assert _reason(mesh, _beat(10, 1, mesh.boot, {V4}, health=1, down=sick, gated=gated)) is None
    peer = mesh.peers["node-2"]
    assert heard == [("node-2", {"shop/web", "shop/api"})] and (peer.health, peer.down, peer.gated) == (1, sick, gated)
    # held, not yet programmed: what we echo is still 0, until a sync that read generation 1 has applied it
    assert peer.programmed == 0
    mesh.acknowledge(mesh.held())
    assert peer.programmed == 1
    # the same generation again (the acknowledgement was lost), or beats without the sets: nothing new
    assert _reason(mesh, _beat(10, 2, mesh.boot, {V4}, health=1, down=sick)) is None
    assert _reason(mesh, _beat(10, 3, mesh.boot, {V4}, health=1)) is None
    assert len(heard) == 1
    # a view held from an earlier incarnation of the peer acknowledges nothing of the new one
    stale = mesh.held()
    assert _reason(mesh, _beat(11, 1, mesh.boot, {V4}, health=1, down={})) is None
    mesh.acknowledge(stale)
    assert mesh.peers["node-2"].programmed == 0
    # it holds our generation 0; once we have something down, it is told until it acknowledges
    mesh.set_down({"shop/api": frozenset({(ipaddress.ip_address("198.19.1.9"), 0)})})
    assert mesh.health == 1 and mesh.peers["node-2"].acked == 0
    assert _reason(mesh, _beat(11, 4, mesh.boot, {V4}, health=1, health_echo=1)) is None
    assert mesh.peers["node-2"].acked == 1
    # it dies: its endpoints' health goes with it (they are its endpoints, judged by its node's liveness now)
    assert _reason(mesh, _beat(11, 5, mesh.boot, {V4}, health=2, down=sick)) is None
    mesh._expire("node-2")
    assert heard[-1] == ("node-2", {"shop/web"})


def test_a_beat_is_sent_with_the_down_set_only_to_the_peers_lacking_it() -> None:
    sent: list[tuple[bytes, tuple[str, int]]] = []

    class Socket:
        def sendto(self, data: bytes, address: tuple[str, int]) -> None:
            sent.append((data, address))
    mesh = _mesh([])
    mesh.address = ipaddress.ip_address("198.18.0.11")
    mesh.peers["node-3"] = Peer(ipaddress.ip_address("198.18.0.13"), on_link=True)
    mesh.set_down({"shop/web": frozenset({(ipaddress.ip_address("198.19.1.5"), 8080)})})
    mesh.peers["node-3"].acked = mesh.health
    mesh._sock = Socket()  # type: ignore[assignment]
    mesh._send()
    bodies = {address[0]: decode_body(open_sealed(data, [KEY])[1]) for data, address in sent}
    assert bodies["198.18.0.12"][2] == (mesh.down, {}) and bodies["198.18.0.12"][0].health == 1
    assert bodies["198.18.0.13"][2] is None and bodies["198.18.0.13"][0].health == 1


# -- what this node may announce -----------------------------------------------------------------------
FE = Frontend(V4, "udp", 9090)


def policy(*backends: str, service: str = "default/ha") -> FrontendPolicy:
    return FrontendPolicy(service, tuple(Backend(ipaddress.ip_address(b), 9090) for b in backends))


def vips_for(advertisements: list[L2AdvertisementSpec], applied: dict[Frontend, tuple[str, FrontendPolicy]],
             local: set[str] | None = None, interface: str | None = "eth0",
             labels: dict[str, str] | None = None) -> dict[IPAddress, L2Vip]:
    def policies_of(vip: IPAddress) -> list[FrontendPolicy]:
        return [policy for fe, (_, policy) in applied.items() if fe.vip == vip]
    return l2_vips("node-1", labels={"zone": "a", **(labels or {})}, default_interface=interface,
                   advertisements=advertisements,
                   allocations={V4: VipOwners("layer2", ("default/ha",))}, policies_of=policies_of,
                   is_local=lambda service: service in (local or set()))


def test_a_vip_is_announced_where_an_advertisement_selects_its_pool_and_the_node() -> None:
    applied = {FE: ("default/ha", policy("198.19.1.3"))}
    vips = vips_for([L2AdvertisementSpec(ipPools=["layer2"])], applied)
    assert vips[V4].interfaces == ("eth0",) and vips[V4].ready is None
    assert vips_for([L2AdvertisementSpec(ipPools=["other"])], applied) == {}
    other_zone = L2AdvertisementSpec(nodeSelector=LabelSelector(matchLabels={"zone": "b"}))
    assert vips_for([other_zone], applied) == {}
    both = [L2AdvertisementSpec(interfaces=["eth1"]), L2AdvertisementSpec(ipPools=["layer2"])]
    assert vips_for(both, applied)[V4].interfaces == ("eth0", "eth1")


def test_a_vip_without_rules_or_local_endpoints_is_not_ready() -> None:
    ads = [L2AdvertisementSpec()]
    assert vips_for(ads, {})[V4].ready == "node-1 has no rules for 198.18.0.240"
    no_backends = {FE: ("default/ha", policy())}
    assert vips_for(ads, no_backends)[V4].ready is None  # Cluster: this node forwards to wherever pods are
    assert vips_for(ads, no_backends, local={"default/ha"})[V4].ready == (
        "no ready local endpoint on node-1 (externalTrafficPolicy Local)")
    draining = {FE: ("default/ha", replace(policy("198.19.1.3"), terminating=True))}  # forwards, stays out of rotation
    assert vips_for(ads, draining, local={"default/ha"})[V4].ready == (
        "no ready local endpoint on node-1 (externalTrafficPolicy Local)")
    assert vips_for(ads, draining)[V4].ready is None


def test_a_node_excluded_from_load_balancers_announces_nothing() -> None:
    applied = {FE: ("default/ha", policy("198.19.1.3"))}
    label = {"node.kubernetes.io/exclude-from-external-load-balancers": ""}
    assert vips_for([L2AdvertisementSpec()], applied, labels=label)[V4].ready == (
        "node-1 is excluded from external load balancers (label "
        "node.kubernetes.io/exclude-from-external-load-balancers)")


def test_a_missing_interface_or_none_to_answer_on_is_a_problem_of_the_advertisement() -> None:
    assert vips_for([L2AdvertisementSpec()], {}, interface=None) == {}

    def state(name: str) -> str:
        return "up" if name == "eth0" else "missing"

    def problems(spec: L2AdvertisementSpec, interface: str | None = "eth0") -> list[str]:
        return advertisement_problems("node-1", {"zone": "a"}, interface, spec, state)
    assert problems(L2AdvertisementSpec(interfaces=["eth0", "eth9"])) == ["interface eth9 does not exist on node-1"]
    assert problems(L2AdvertisementSpec(), interface=None) == [
        "node-1 has no interface holding its InternalIP to answer on"]
    elsewhere = LabelSelector(matchLabels={"zone": "b"})
    assert problems(L2AdvertisementSpec(interfaces=["eth9"], nodeSelector=elsewhere)) == []


# -- stale UDP flows ------------------------------------------------------------------------------------
def test_only_removed_udp_endpoints_have_their_flows_forgotten() -> None:
    a, b = Backend(ipaddress.ip_address("198.19.1.3"), 9090), Backend(ipaddress.ip_address("198.19.2.3"), 9090)
    assert stale_flows(FE, (a, b), (a,)) == [StaleFlows(FE, b)]
    assert stale_flows(FE, (a, b), (Backend(a.ip, a.port, weight=3),)) == [StaleFlows(FE, b)]  # reweighted: kept
    assert stale_flows(Frontend(V4, "tcp", 80), (a, b), ()) == []


def test_a_withdrawn_vip_is_announced_nowhere() -> None:
    withdrawn = FrontendPolicy("default/ha", (), withdraw=True)
    vips = vips_for([L2AdvertisementSpec()], {FE: ("default/ha", withdrawn)})
    assert vips[V4].ready is not None and "Withdraw" in vips[V4].ready
