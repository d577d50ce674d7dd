"""The lab network as plain data, and the `ip` commands that build it (pure, no I/O).

Every lab host is a network namespace with one leg (`eth0`) on the LAN bridge, which lives in
a namespace of its own (`portico-lan`) so the host namespace holds nothing but the API veth.
Nodes route pod traffic host-gw style: each knows the other nodes' pod CIDRs via their LAN
address; the client and the API side know every pod CIDR via its node. A BGP `router` host
later joins the same way: one more `LabHost` (with its own segment towards the client).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from portico.dev import addressing as a

LAN_BRIDGE = "br-lan"
LAB_IFACE = "eth0"  # every lab host's leg on the LAN


@dataclass(frozen=True)
class Route:
    destination: a.Network
    via: a.Address


@dataclass(frozen=True)
class LabHost:
    name: str  # the name users pass to `portico dev exec`
    netns: str | None  # None: the host namespace (only the API side)
    iface: str  # this host's leg on the LAN
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    routes: tuple[Route, ...] = ()
    forwarding: bool = False
    pods: a.NodeAddressing | None = None  # set on nodes: the pod bridge and its CIDRs

    @property
    def lan_peer_iface(self) -> str:
        """The LAN bridge's end of this host's veth."""
        return "lan-" + self.name[:11]


@dataclass(frozen=True)
class LabTopology:
    nodes: tuple[a.NodeAddressing, ...]
    hosts: tuple[LabHost, ...] = field(default=())

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
    lan4, lan6 = a.LAN_V4.prefixlen, a.LAN_V6.prefixlen
    api = LabHost(
        name="api", netns=None, iface=a.API_HOST_IFACE,
        addresses=(ipaddress.ip_interface(f"{a.API_ADDRESS}/{lan4}"),),
        routes=_pod_routes(nodes, families=(4,)),
    )
    client_v4, client_v6 = a.client_addresses()
    client = LabHost(
        name="client", netns=a.host_netns("client"), iface=LAB_IFACE,
        addresses=(ipaddress.ip_interface(f"{client_v4}/{lan4}"), ipaddress.ip_interface(f"{client_v6}/{lan6}")),
        routes=_pod_routes(nodes),
    )
    node_hosts = tuple(
        LabHost(
            name=n.name, netns=a.host_netns(n.name), iface=LAB_IFACE,
            addresses=(ipaddress.ip_interface(f"{n.lan_v4}/{lan4}"), ipaddress.ip_interface(f"{n.lan_v6}/{lan6}")),
            routes=_pod_routes(nodes, skip=n.index), forwarding=True, pods=n,
        )
        for n in nodes
    )
    return LabTopology(nodes=nodes, hosts=(api, client, *node_hosts))


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
    return [["ip", "netns", "exec", host.netns, "sysctl", "-qw", f"{k}={v}"] for k, v in values.items()]


def _addr_add(netns: str | None, iface: str, addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> list[str]:
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
        cmds += _route_commands(host)
    return cmds


def _route_commands(host: LabHost) -> list[list[str]]:
    return [_ip(host.netns, *(["-6"] if r.via.version == 6 else []), "route", "replace", str(r.destination),
                "via", str(r.via), "dev", host.iface) for r in host.routes]


def link_up_commands(host: LabHost) -> list[list[str]]:
    """Bring a host's LAN leg back up after a test took it down. The kernel drops routes through a link
    that goes down and does not restore them; a real node's network manager would, so we do."""
    return [_ip(host.netns, "link", "set", host.iface, "up"), *_route_commands(host)]
