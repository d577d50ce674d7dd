from __future__ import annotations

import ipaddress

from portico.dataplane.drift import foreign_change
from portico.dataplane.model import Algorithm, Backend, DesiredState, Frontend, FrontendPolicy
from portico.dataplane.nftables import (
    ExistingTable,
    KernelState,
    Ruleset,
    full_transaction,
    incremental_transaction,
    render,
    render_frontend,
)

ip = ipaddress.ip_address
VIP = ip("198.18.100.1")
WEB = Frontend(VIP, "tcp", 80)
DNS = Frontend(VIP, "udp", 53)
V6 = Frontend(ip("fd00:198:18:f00::1"), "tcp", 80)


def pods(*last: int, port: int = 8080, net: str = "198.19.1.") -> tuple[Backend, ...]:
    return tuple(Backend(ip(f"{net}{n}"), port) for n in last)


def state(**frontends: FrontendPolicy) -> DesiredState:
    by_name = {"web": WEB, "dns": DNS, "v6": V6}
    return DesiredState({by_name[k]: v for k, v in frontends.items()}, (ipaddress.ip_network("198.19.1.0/24"),))


def test_plain_frontends_share_a_dispatch_chain_per_algorithm_and_slot_count() -> None:
    rs = render(state(web=FrontendPolicy("a/web", pods(2, 3)), dns=FrontendPolicy("a/dns", pods(4, 5, port=53))))
    assert rs.elements["frontends4"] == {"198.18.100.1 . tcp . 80": "goto pick4-tcp-random-2",
                                         "198.18.100.1 . udp . 53": "goto pick4-udp-random-2"}
    assert rs.chains["pick4-tcp-random-2"] == (
        "meta l4proto tcp dnat ip to ip daddr . th dport . numgen random mod 2 map @backends4_tcp",)
    assert rs.elements["backends4_tcp"] == {"198.18.100.1 . 80 . 0": "198.19.1.2 . 8080",
                                            "198.18.100.1 . 80 . 1": "198.19.1.3 . 8080"}
    assert rs.elements["backends4_udp"] == {"198.18.100.1 . 53 . 0": "198.19.1.4 . 53",
                                            "198.18.100.1 . 53 . 1": "198.19.1.5 . 53"}
    assert rs.elements["vips4"] == {"198.18.100.1": None}
    assert rs.elements["local_pods4"] == {"198.19.1.0/24": None}


def test_no_ready_backend_keeps_the_vip_but_no_dnat_so_it_is_refused() -> None:
    rs = render(state(web=FrontendPolicy("a/web", ())))
    assert rs.elements["frontends4"] == {} and rs.elements["backends4_tcp"] == {}
    assert rs.elements["vips4"] == {"198.18.100.1": None}
    assert any("reject with tcp reset" in r for r in rs.chains["refuse"])


def test_a_locally_delivered_frontend_is_never_dnated_nor_refused() -> None:
    rs = render(state(web=FrontendPolicy("a/gw", (), deliver_local=True)))
    assert rs.elements["local_frontends4"] == {"198.18.100.1 . tcp . 80": None}
    assert rs.elements["frontends4"] == {} and rs.elements["vips4"] == {"198.18.100.1": None}
    refuse = rs.chains["refuse"]
    assert refuse[0] == "ip daddr . meta l4proto . th dport @local_frontends4 return"  # before any reject


def test_round_robin_and_source_ranges_get_a_chain_of_their_own() -> None:
    ranges = (ipaddress.ip_network("198.18.0.0/24"), ipaddress.ip_network("fd00:198:18::/64"))
    rs = render(state(web=FrontendPolicy("a/web", pods(2, 3), Algorithm.ROUND_ROBIN, ranges)))
    chain = "fe-198-18-100-1-tcp-80"
    assert rs.elements["frontends4"] == {"198.18.100.1 . tcp . 80": f"goto {chain}"}
    assert rs.objects == {"dropped-198-18-100-1-tcp-80": "counter dropped-198-18-100-1-tcp-80"}
    assert rs.chains[chain] == (
        'ip saddr != { 198.18.0.0/24 } counter name "dropped-198-18-100-1-tcp-80" drop',  # the node's own clients
        "meta l4proto tcp dnat ip to ip daddr . th dport . numgen inc mod 2 map @backends4_tcp")
    # Incoming traffic is filtered before any NAT, by a chain of its own the filter hook reaches.
    assert rs.elements["source_filters4"] == {"198.18.100.1 . tcp . 80": "goto src-198-18-100-1-tcp-80"}
    assert rs.chains["src-198-18-100-1-tcp-80"] == (
        'ip saddr != { 198.18.0.0/24 } counter name "dropped-198-18-100-1-tcp-80" drop',)


def test_source_ranges_of_the_other_family_only_drop_everyone() -> None:
    rs = render(state(web=FrontendPolicy("a/web", pods(2), source_ranges=(ipaddress.ip_network("fd00::/8"),))))
    assert rs.chains["fe-198-18-100-1-tcp-80"][0] == 'counter name "dropped-198-18-100-1-tcp-80" drop'


def test_weights_take_slots_and_maglev_fills_its_table() -> None:
    weighted = (Backend(ip("198.19.1.2"), 80, weight=2), Backend(ip("198.19.1.3"), 80))
    rs = render(state(web=FrontendPolicy("a/web", weighted)))
    assert sorted(rs.elements["backends4_tcp"].values()) == ["198.19.1.2 . 80"] * 2 + ["198.19.1.3 . 80"]
    rs = render(state(web=FrontendPolicy("a/web", pods(2, 3), Algorithm.MAGLEV)))
    assert rs.elements["frontends4"]["198.18.100.1 . tcp . 80"] == "goto pick4-tcp-maglev-1009"
    assert len(rs.elements["backends4_tcp"]) == 1009
    assert "jhash ip saddr mod 1009 seed 0x5eed" in rs.chains["pick4-tcp-maglev-1009"][0]


def test_every_frontend_is_counted_even_without_backends() -> None:
    rs = render(state(web=FrontendPolicy("a/web", pods(2)), dns=FrontendPolicy("a/dns", ())))
    assert rs.elements["frontend_counters4"] == {"198.18.100.1 . tcp . 80": None, "198.18.100.1 . udp . 53": None}


def test_client_ip_affinity_pins_per_backend_with_timed_sets() -> None:
    rs = render(state(web=FrontendPolicy("a/web", pods(2, 3), affinity_timeout=60)))
    be2, be3 = "be-198-18-100-1-tcp-80-198-19-1-2-8080", "be-198-18-100-1-tcp-80-198-19-1-3-8080"
    aff2 = "aff-198-18-100-1-tcp-80-198-19-1-2-8080-60"
    assert rs.elements["frontends4"] == {"198.18.100.1 . tcp . 80": "goto fe-198-18-100-1-tcp-80"}
    assert rs.chains["fe-198-18-100-1-tcp-80"] == (
        f"ip saddr @{aff2} goto {be2}", f"ip saddr @aff-198-18-100-1-tcp-80-198-19-1-3-8080-60 goto {be3}",
        f"numgen random mod 2 vmap {{ 0 : goto {be2}, 1 : goto {be3} }}")
    assert rs.chains[be2] == (f"update @{aff2} {{ ip saddr }}", "meta l4proto tcp dnat ip to 198.19.1.2:8080")
    assert rs.objects[aff2] == f"set {aff2} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}"
    assert rs.elements["backends4_tcp"] == {}  # its own chains instead of the shared map


def test_a_persistence_mask_pins_the_client_network() -> None:
    rs = render(state(web=FrontendPolicy("a/web", pods(2), affinity_timeout=60, affinity_prefix=24)))
    aff = "aff-198-18-100-1-tcp-80-198-19-1-2-8080-60-24"  # the prefix in the name: its pins are its own
    assert rs.chains["fe-198-18-100-1-tcp-80"][0] == (
        f"ip saddr & 255.255.255.0 @{aff} goto be-198-18-100-1-tcp-80-198-19-1-2-8080")
    assert rs.chains["be-198-18-100-1-tcp-80-198-19-1-2-8080"][0] == f"update @{aff} {{ ip saddr & 255.255.255.0 }}"


def test_losing_a_backend_drops_its_pins_and_keeps_the_others() -> None:
    k = kernel(web=FrontendPolicy("a/web", pods(2, 3), affinity_timeout=60))
    delta = k.apply({WEB: render_frontend(WEB, FrontendPolicy("a/web", pods(2), affinity_timeout=60))})
    assert list(delta.objects_removed) == ["aff-198-18-100-1-tcp-80-198-19-1-3-8080-60"] and not delta.objects_added
    lines = incremental_transaction(delta).splitlines()
    assert lines.index("delete chain inet portico be-198-18-100-1-tcp-80-198-19-1-3-8080") < lines.index(
        "delete set inet portico aff-198-18-100-1-tcp-80-198-19-1-3-8080-60")  # after the rule using it
    assert lines[0].startswith("add chain inet portico fe-198-18-100-1-tcp-80")  # the frontend chain, refilled
    delta = k.apply({WEB: render_frontend(WEB, FrontendPolicy("a/web", pods(2, 4), affinity_timeout=60))})
    lines = incremental_transaction(delta).splitlines()
    assert lines[0] == ("add set inet portico aff-198-18-100-1-tcp-80-198-19-1-4-8080-60 "
                        "{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }")  # declared before any rule


def test_ipv6_frontends_use_the_ipv6_maps() -> None:
    rs = render(state(v6=FrontendPolicy("a/v6", pods(2, net="fd00:198:18:101::"))))
    assert rs.elements["frontends6"] == {"fd00:198:18:f00::1 . tcp . 80": "goto pick6-tcp-random-1"}
    assert rs.elements["backends6_tcp"] == {"fd00:198:18:f00::1 . 80 . 0": "fd00:198:18:101::2 . 8080"}
    assert rs.chains["pick6-tcp-random-1"] == (
        "meta l4proto tcp dnat ip6 to ip6 daddr . th dport . numgen random mod 1 map @backends6_tcp",)


def kernel(**frontends: FrontendPolicy) -> KernelState:
    k = KernelState()
    k.apply({fe: render_frontend(fe, policy) for fe, policy in state(**frontends).frontends.items()})
    return k


def test_incremental_touches_only_what_changed() -> None:
    k = kernel(web=FrontendPolicy("a/web", pods(2, 3)), dns=FrontendPolicy("a/dns", pods(4, 5, port=53)))
    delta = k.apply({WEB: render_frontend(WEB, FrontendPolicy("a/web", pods(2, 6)))})
    assert incremental_transaction(delta).splitlines() == [
        "delete element inet portico backends4_tcp { 198.18.100.1 . 80 . 1 }",
        "add element inet portico backends4_tcp { 198.18.100.1 . 80 . 1 : 198.19.1.6 . 8080 }",
    ]
    assert not k.apply({WEB: render_frontend(WEB, FrontendPolicy("a/web", pods(2, 6)))})


def test_shared_chains_and_vips_stay_while_anyone_uses_them() -> None:
    web2 = Frontend(VIP, "tcp", 8080)
    k = kernel(web=FrontendPolicy("a/web", pods(2, 3)), dns=FrontendPolicy("a/dns", pods(4, 5, port=53)))
    k.apply({web2: render_frontend(web2, FrontendPolicy("a/web2", pods(6, 7)))})
    delta = k.apply({WEB: None})  # web2 still uses pick4-tcp-random-2, and the VIP is dns's and web2's too
    assert delta.chains_removed == [] and "vips4" not in delta.elements_removed
    assert sorted(delta.elements_removed) == ["backends4_tcp", "frontend_counters4", "frontends4"]
    delta = k.apply({web2: None})
    assert delta.chains_removed == ["pick4-tcp-random-2"]
    delta = k.apply({DNS: None})
    assert delta.elements_removed["vips4"] == ["198.18.100.1"]
    assert k.ruleset().elements["backends4_udp"] == {}


def test_a_batch_nets_out_swaps() -> None:
    web2 = Frontend(VIP, "tcp", 8080)
    k = kernel(web=FrontendPolicy("a/web", pods(2, 3)))
    k.apply({web2: render_frontend(web2, FrontendPolicy("a/web2", pods(4, 5, 6)))})
    delta = k.apply({WEB: render_frontend(WEB, FrontendPolicy("a/web", pods(2, 3, 7))),
                     web2: render_frontend(web2, FrontendPolicy("a/web2", pods(4, 5)))})
    assert not delta.chains_added and not delta.chains_removed  # both chains still used, by the other one


def test_incremental_orders_chain_creation_before_use_and_deletion_after() -> None:
    k = kernel(web=FrontendPolicy("a/web", pods(2, 3)))
    lines = incremental_transaction(k.apply({WEB: render_frontend(WEB, FrontendPolicy("a/web", pods(2, 3, 4)))}))
    add_chain = lines.splitlines().index("add chain inet portico pick4-tcp-random-3")
    repoint = next(i for i, line in enumerate(lines.splitlines()) if "goto pick4-tcp-random-3" in line)
    drop_chain = lines.splitlines().index("delete chain inet portico pick4-tcp-random-2")
    assert add_chain < repoint < drop_chain
    assert lines.splitlines()[drop_chain - 1] == "flush chain inet portico pick4-tcp-random-2"


def test_render_equals_the_incremental_result() -> None:
    k = kernel(web=FrontendPolicy("a/web", pods(2, 3)), v6=FrontendPolicy("a/v6", pods(2, net="fd00:198:18:101::")))
    k.apply({WEB: render_frontend(WEB, FrontendPolicy("a/web", pods(9), Algorithm.MAGLEV)), V6: None,
             DNS: render_frontend(DNS, FrontendPolicy("a/dns", pods(4, port=53)))})
    direct = render(DesiredState({WEB: FrontendPolicy("a/web", pods(9), Algorithm.MAGLEV),
                                  DNS: FrontendPolicy("a/dns", pods(4, port=53))}))
    got = k.ruleset()
    assert {n: r for n, r in got.chains.items()} == {n: r for n, r in direct.chains.items()
                                                     if n not in ("refuse", "heartbeat")}
    assert {n: dict(e) for n, e in got.elements.items()} == {
        n: dict(e) for n, e in direct.elements.items()}


def test_full_transaction_adopts_and_deletes_stale_chains() -> None:
    rs = render(state(web=FrontendPolicy("a/web", pods(2))))
    text = full_transaction(rs, ExistingTable(chains=("pick4-tcp-random-1", "fe-old", "prerouting"), objects={
        "aff-old": "set", "dropped-old": "counter", "refused4": "counter", "frontends4": "map"}))
    assert "delete chain inet portico fe-old" in text
    assert "delete set inet portico aff-old" in text and "delete counter inet portico dropped-old" in text
    assert "delete counter inet portico refused4" not in text and "delete map" not in text
    assert "delete chain inet portico pick4-tcp-random-1" not in text
    assert "delete chain inet portico prerouting" not in text
    assert text.index("flush map inet portico frontends4") < text.index("add element inet portico frontends4")


def test_a_base_chain_whose_priority_changed_is_made_anew() -> None:
    """An older agent hooked prerouting at dstnat; the kernel cannot move a hook, so the chain is replaced."""
    old = ExistingTable(chains=("prerouting", "output"), hooks={"prerouting": ("nat", "prerouting", -100),
                                                               "output": ("nat", "output", -105)})
    lines = full_transaction(render(state()), old).splitlines()
    assert "delete chain inet portico prerouting" in lines and "delete chain inet portico output" not in lines
    assert lines.index("delete chain inet portico prerouting") < lines.index(
        "add chain inet portico prerouting { type nat hook prerouting priority -105; policy accept; }")


def test_long_element_lists_are_batched() -> None:
    many = Ruleset(elements={"vips4": {f"198.18.{i // 256}.{i % 256}": None for i in range(2500)}})
    adds = [line for line in full_transaction(many).splitlines() if line.startswith("add element")]
    assert len(adds) == 3


def test_drift_is_a_change_to_our_table_by_another_process() -> None:
    batch = ["delete chain inet portico fe-198-18-0-1-tcp-80", "delete table inet portico"]
    assert foreign_change(batch, 42, "nft", {7, 8}) == "delete chain inet portico fe-198-18-0-1-tcp-80"
    assert foreign_change(batch, 7, "nft", {7, 8}) is None  # one of our own transactions
    assert foreign_change(batch, 4242, "portico-nft", {7, 8}) is None  # ours, from a pod (a host PID we never saw)
    assert foreign_change(["add table inet kube-proxy", "add table inet portico-test"], 42, "nft", ()) is None
    assert foreign_change(["add rule ip filter INPUT accept"], 42, "nft", ()) is None


def test_limits_are_rules_of_the_frontends_own_chain_and_bandwidth_chains_both_ways() -> None:
    from portico.dataplane.model import Limits
    limits = Limits(connections=100, client_connections=3, client_rate=(10, 5), bandwidth=1_000_000)
    rs = render(state(web=FrontendPolicy("a/web", pods(2), limits=limits)))
    fe = "fe-198-18-100-1-tcp-80"
    assert rs.elements["frontends4"]["198.18.100.1 . tcp . 80"] == f"goto {fe}"
    rules = rs.chains[fe]
    assert rules[0] == ('ct count over 100 counter name "limit-198-18-100-1-tcp-80-connections" '
                        "reject with tcp reset")
    assert rules[1] == ("add @conns-198-18-100-1-tcp-80 { ip saddr ct count over 3 } counter name "
                        '"limit-198-18-100-1-tcp-80-client-connections" reject with tcp reset')
    assert rules[2].startswith("update @rate-198-18-100-1-tcp-80-10-5 { ip saddr limit rate over 10/second "
                               "burst 5 packets }")
    assert rules[3].startswith("meta l4proto tcp dnat")  # then the pick, as without limits
    assert rs.elements["bandwidth_in4"] == {"198.18.100.1 . tcp . 80": "jump bwi-198-18-100-1-tcp-80"}
    assert rs.elements["bandwidth_out4"] == {"198.18.100.1 . tcp . 80": "jump bwo-198-18-100-1-tcp-80"}
    assert rs.chains["bwo-198-18-100-1-tcp-80"] == (
        'limit rate over 1000000 bytes/second counter name '
        '"limit-198-18-100-1-tcp-80-bandwidth-out" drop',)
    assert {"limit-198-18-100-1-tcp-80-connections", "conns-198-18-100-1-tcp-80"} <= set(rs.objects)
