from __future__ import annotations

import ipaddress

import pytest

from portico.dev import addressing as a
from portico.dev.topology import link_up_commands, plan_lab, setup_commands


def _addresses_in(argv: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    found = []
    for word in argv:
        try:
            found.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            continue
    return found


@pytest.mark.parametrize("nodes", [1, 2, 5, a.MAX_NODES])
def test_lab_uses_only_lab_ranges(nodes: int) -> None:
    topology = plan_lab(nodes)
    commands = setup_commands(topology)
    nets = [n for argv in commands for n in _addresses_in(argv)]
    assert nets, "the plan assigns addresses"
    assert all(a.in_lab_ranges(n) for n in nets), [n for n in nets if not a.in_lab_ranges(n)]


def test_host_namespace_gets_only_the_api_veth() -> None:
    commands = setup_commands(plan_lab(2))
    host_side = [argv for argv in commands if argv[:2] != ["ip", "-n"] and argv[:2] != ["ip", "netns"]]
    assert host_side, "the API side is configured"
    for argv in host_side:
        assert a.API_HOST_IFACE in argv, argv
    # Its routes lead only to pod CIDRs, via lab nodes.
    routes = [argv for argv in host_side if "route" in argv]
    assert {argv[argv.index("replace") + 1] for argv in routes} == {"198.19.1.0/24", "198.19.2.0/24"}


def test_nodes_have_distinct_pod_cidrs_and_route_to_each_other() -> None:
    topology = plan_lab(3)
    cidrs = [c for n in topology.nodes for c in n.pod_cidrs]
    assert len(set(cidrs)) == len(cidrs)
    node2 = topology.host("node-2")
    assert {str(r.destination) for r in node2.routes} == {
        "198.19.1.0/24", "198.19.3.0/24", "fd00:198:18:101::/64", "fd00:198:18:103::/64",
        "198.18.1.0/24", "fd00:198:18:1::/64",  # answers to the client's segment go through the router
        "198.18.192.0/18", "fd00:198:18:ff::/108"}  # ClusterIPs: to the router, which has no route for them
    assert {str(r.via) for r in node2.routes if r.destination.prefixlen in (24, 64) and r.destination in (
        a.CLIENT_NET_V4, a.CLIENT_NET_V6)} == {"198.18.0.2", "fd00:198:18::2"}
    assert node2.forwarding and not topology.host("client").forwarding
    assert topology.exec_hosts == ("router", "client", "node-1", "node-2", "node-3")


def test_the_client_reaches_bgp_vips_only_through_the_router_wire() -> None:
    topology = plan_lab(2)
    client, router = topology.host("client"), topology.host("router")
    to_vips = {r.destination: (r.via, r.dev) for r in client.routes if r.dev == "eth1"}
    assert to_vips == {a.BGP_VIPS_V4: (a.CLIENT_NET_V4[1], "eth1"), a.BGP_VIPS_V6: (a.CLIENT_NET_V6[1], "eth1")}
    assert router.forwarding and router.multipath_l4_hash and not router.routes  # BIRD installs its routes
    commands = setup_commands(topology)
    wire = ["ip", "-n", "portico-router", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1",
            "netns", "portico-client"]
    assert wire in commands
    first_route = min(i for i, argv in enumerate(commands) if "route" in argv and "eth1" in argv)
    assert commands.index(wire) < first_route  # routes through the wire come after it


def test_interface_names_fit_linux_limit() -> None:
    topology = plan_lab(a.MAX_NODES)
    names = [h.lan_peer_iface for h in topology.hosts] + [a.pod_host_iface("0123456789abcdef")]
    assert all(len(n) <= 15 for n in names)
    assert len({h.lan_peer_iface for h in topology.hosts}) == len(topology.hosts)


@pytest.mark.parametrize("nodes", [0, a.MAX_NODES + 1])
def test_node_count_is_bounded(nodes: int) -> None:
    with pytest.raises(ValueError, match="--nodes"):
        plan_lab(nodes)


def test_bringing_a_link_back_restores_the_routes_the_kernel_dropped() -> None:
    node = plan_lab(3).host("node-2")
    cmds = link_up_commands(node)
    assert cmds[0] == ["ip", "-n", "portico-node-2", "link", "set", "eth0", "up"]
    restored = {argv[argv.index("replace") + 1] for argv in cmds[1:]}
    assert restored == {"198.19.1.0/24", "198.19.3.0/24", "fd00:198:18:101::/64", "fd00:198:18:103::/64",
                        "198.18.1.0/24", "fd00:198:18:1::/64", "198.18.192.0/18", "fd00:198:18:ff::/108"}
