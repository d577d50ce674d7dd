"""The lab network as plain data, and the `ip` commands that build it (pure, no I/O).

Every lab host is a network namespace with one leg (`eth0`) on the LAN bridge, which lives in
a namespace of its own (`portico-lan`) so the host namespace holds nothing but the API veth.
Nodes route pod traffic host-gw style: each knows the other nodes' pod CIDRs via their LAN
address; the client and the API side know every pod CIDR via its node. The `router` (BIRD, for
BGP) is on the LAN too and has a wire of its own to the client (`eth1` at both ends): the client
reaches BGP VIPs through it, and nodes send their answers back through it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from portico.dev import addressing as a

LAN_BRIDGE = "br-lan"
LAB_IFACE = "eth0"  # every lab host's leg on the LAN
CLIENT_WIRE_IFACE = "eth1"  # both ends of the router-client wire
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Route:
    destination: a.Network
    via: a.Address
    dev: str | None = None  # None: the host's LAN leg


@dataclass(frozen=True)
class LabHost:
    name: str  # the name users pass to `portico dev exec`
    netns: str | None  # None: the host namespace (only the API side)
    iface: str  # this host's leg on the LAN
    addresses: tuple[Interface, ...]
    routes: tuple[Route, ...] = ()
    forwarding: bool = False
    multipath_l4_hash: bool = False  # a router: spread ECMP flows by ports too (by addresses only otherwise)
    pods: a.NodeAddressing | None = None  # set on nodes: the pod bridge and its CIDRs

    @property
    def lan_peer_iface(self) -> str:
        """The LAN bridge's end of this host's veth."""
        return "lan-" + self.name[:11]


@dataclass(frozen=True)
class Leg:
    host: str
    iface: str
    addresses: tuple[Interface, ...]


@dataclass(frozen=True)
class Wire:
    """A veth straight from one host to another, no bridge between."""

    a: Leg
    b: Leg


@dataclass(frozen=True)
class LabTopology:
    nodes: tuple[a.NodeAddressing, ...]
    hosts: tuple[LabHost, ...] = field(default=())
    wires: tuple[Wire, ...] = field(default=())

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    @property
    def exec_hosts(self) -> tuple[str, ...]:
        """Hosts a user can run commands in (`portico dev exec`)."""
        return tuple(h.name for h in self.hosts if h.netns is not None)


def _pod_routes(nodes: tuple[a.NodeAddressing, ...], *, skip: int | None = None,
                families: tuple[int, ...] = (4, 6)) -> tuple[Route, ...]:
    routes: list[Route] = []
    for node in nodes:
        if node.index == skip:
            continue
        if 4 in families:
            routes.append(Route(node.pod_cidr_v4, node.lan_v4))
        if 6 in families:
            routes.append(Route(node.pod_cidr_v6, node.lan_v6))
    return tuple(routes)


def plan_lab(node_count: int) -> LabTopology:
    if not 1 <= node_count <= a.MAX_NODES:
        raise ValueError(f"--nodes must be between 1 and {a.MAX_NODES}, got {node_count}")
    nodes = tuple(a.node_addressing(i) for i in range(1, node_count + 1))
    api = LabHost(
        name="api", netns=None, iface=a.API_HOST_IFACE,
        addresses=(ipaddress.ip_interface(f"{a.API_ADDRESS}/{a.LAN_V4.prefixlen}"),),
        routes=_pod_routes(nodes, families=(4,)),
    )
    router_v4, router_v6 = a.router_addresses()
    router = LabHost(name="router", netns=a.host_netns("router"), iface=LAB_IFACE,
                     addresses=_lan_interfaces(router_v4, router_v6), forwarding=True, multipath_l4_hash=True)
    gateway_v4, gateway_v6 = a.router_client_side_addresses()
    client_nets = (a.CLIENT_NET_V4, a.CLIENT_NET_V6)
    client_wire = Wire(Leg("router", CLIENT_WIRE_IFACE, _interfaces((gateway_v4, gateway_v6), client_nets)),
                       Leg("client", CLIENT_WIRE_IFACE, _interfaces(a.client_segment_addresses(), client_nets)))
    client = LabHost(
        name="client", netns=a.host_netns("client"), iface=LAB_IFACE,
        addresses=_lan_interfaces(*a.client_addresses()),
        routes=(*_pod_routes(nodes), Route(a.BGP_VIPS_V4, gateway_v4, CLIENT_WIRE_IFACE),
                Route(a.BGP_VIPS_V6, gateway_v6, CLIENT_WIRE_IFACE)),
    )
    back_to_client = (Route(a.CLIENT_NET_V4, router_v4), Route(a.CLIENT_NET_V6, router_v6))
    # A route for ClusterIPs, so a node's own connections to one get as far as the output hook, where kube-proxy
    # (when the lab runs it) DNATs them; without kube-proxy they end at the router, which has no route for them.
    cluster_ips = (Route(a.SERVICE_CIDR_V4, router_v4), Route(a.SERVICE_CIDR_V6, router_v6))
    node_hosts = tuple(
        LabHost(
            name=n.name, netns=a.host_netns(n.name), iface=LAB_IFACE, addresses=_lan_interfaces(n.lan_v4, n.lan_v6),
            routes=(*_pod_routes(nodes, skip=n.index), *back_to_client, *cluster_ips), forwarding=True, pods=n,
        )
        for n in nodes
    )
    return LabTopology(nodes=nodes, hosts=(api, router, client, *node_hosts), wires=(client_wire,))


def _interfaces(addresses: tuple[a.Address, ...], networks: tuple[a.Network, ...]) -> tuple[Interface, ...]:
    return tuple(ipaddress.ip_interface(f"{address}/{net.prefixlen}")
                 for address, net in zip(addresses, networks, strict=True))


def _lan_interfaces(v4: a.Address, v6: a.Address) -> tuple[Interface, ...]:
    return _interfaces((v4, v6), (a.LAN_V4, a.LAN_V6))


def _ip(netns: str | None, *args: str) -> list[str]:
    return ["ip", *(["-n", netns] if netns else []), *args]


def _sysctls(host: LabHost) -> list[list[str]]:
    assert host.netns is not None
    values = {
        "net.ipv6.conf.all.accept_dad": "0",  # lab addresses are unique by construction
        "net.ipv6.conf.default.accept_dad": "0",
        # A real node's static addresses survive a link flap (its network manager re-adds them); the
        # kernel's default drops IPv6 ones on link down. The failover tests take links down.
        "net.ipv6.conf.all.keep_addr_on_down": "1",
        "net.ipv6.conf.default.keep_addr_on_down": "1",
        "net.ipv4.ip_forward": "1" if host.forwarding else "0",
        "net.ipv6.conf.all.forwarding": "1" if host.forwarding else "0",
    }
    if host.multipath_l4_hash:
        values |= {"net.ipv4.fib_multipath_hash_policy": "1", "net.ipv6.fib_multipath_hash_policy": "1"}
    return [["ip", "netns", "exec", host.netns, "sysctl", "-qw", f"{k}={v}"] for k, v in values.items()]


def _addr_add(netns: str | None, iface: str, addr: Interface) -> list[str]:
    extra = ["nodad"] if addr.version == 6 else []
    return _ip(netns, "addr", "add", str(addr), "dev", iface, *extra)


def setup_commands(topology: LabTopology) -> list[list[str]]:
    """Commands that build the lab network from nothing, in order."""
    lan = a.LAN_NETNS
    cmds = [
        ["ip", "netns", "add", lan],
        _ip(lan, "link", "set", "lo", "up"),
        _ip(lan, "link", "add", LAN_BRIDGE, "type", "bridge"),
        _ip(lan, "link", "set", LAN_BRIDGE, "up"),
    ]
    for host in topology.hosts:
        if host.netns is None:
            cmds.append(_ip(None, "link", "add", host.iface, "type", "veth",
                            "peer", "name", host.lan_peer_iface, "netns", lan))
        else:
            cmds += [["ip", "netns", "add", host.netns], _ip(host.netns, "link", "set", "lo", "up")]
            cmds += _sysctls(host)
            cmds.append(_ip(lan, "link", "add", host.lan_peer_iface, "type", "veth",
                            "peer", "name", host.iface, "netns", host.netns))
        cmds += [
            _ip(lan, "link", "set", host.lan_peer_iface, "master", LAN_BRIDGE, "up"),
            *(_addr_add(host.netns, host.iface, addr) for addr in host.addresses),
            _ip(host.netns, "link", "set", host.iface, "up"),
        ]
        if host.pods is not None:
            cmds += [
                _ip(host.netns, "link", "add", a.POD_BRIDGE, "type", "bridge"),
                *(
                    _addr_add(host.netns, a.POD_BRIDGE, ipaddress.ip_interface(f"{gw}/{cidr.prefixlen}"))
                    for gw, cidr in zip(host.pods.pod_gateways, host.pods.pod_cidrs, strict=True)
                ),
                _ip(host.netns, "link", "set", a.POD_BRIDGE, "up"),
            ]
    for wire in topology.wires:
        netns_a, netns_b = topology.host(wire.a.host).netns, topology.host(wire.b.host).netns
        assert netns_b is not None
        cmds.append(_ip(netns_a, "link", "add", wire.a.iface, "type", "veth", "peer", "name", wire.b.iface,
                        "netns", netns_b))
        for netns, leg in ((netns_a, wire.a), (netns_b, wire.b)):
            cmds += [*(_addr_add(netns, leg.iface, addr) for addr in leg.addresses),
                     _ip(netns, "link", "set", leg.iface, "up")]
    for host in topology.hosts:  # last: some routes go through wires
        cmds += _route_commands(host)
    return cmds


def _route_commands(host: LabHost) -> list[list[str]]:
    return [_ip(host.netns, *(["-6"] if r.via.version == 6 else []), "route", "replace", str(r.destination),
                "via", str(r.via), "dev", r.dev or host.iface) for r in host.routes]


def link_up_commands(host: LabHost) -> list[list[str]]:
    """Bring a host's LAN leg back up after a test took it down. The kernel drops routes through a link
    that goes down and does not restore them; a real node's network manager would, so we do."""
    return [_ip(host.netns, "link", "set", host.iface, "up"), *_route_commands(host)]
