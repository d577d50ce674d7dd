"""The lab's address plan: the one home of every lab network, address and name.

Only 198.18.0.0/15 (RFC 2544) and fd00:198:18::/48 are used, and only inside namespaces the
lab creates (plus one veth end in the host namespace, which carries the API server address).

    198.18.0.0/24      fd00:198:18::/64        the lab LAN: API server .1, router .2, nodes .11-.99, client .100
    198.18.1.0/24      fd00:198:18:1::/64      the client's own segment behind the router: router .1, client .100
    198.18.0.216/29                            the Ingress address: pool `ingress`, made by portico.dev.install
    198.18.0.224/27    fd00:198:18::f00/120    layer-2 VIPs: on the LAN, announced by ARP/NDP (examples/pool.yaml)
    198.18.100.0/24    fd00:198:18:f00::/120   VIPs off the LAN; tests use 198.18.100.0/25 unannounced (static
                                               routes) and 198.18.101-191.x (API only)
    198.18.100.128/25  fd00:198:18:f00::80/121 BGP VIPs: the router learns them from the nodes (examples/bgp.yaml)
    198.18.192.0/18    fd00:198:18:ff::/108    ClusterIPs (allocated by the API server, not routed; 16k of them)
    198.19.N.0/24      fd00:198:18:1NN::/64    pods of node-N (N = 1..89, NN its two hex digits)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LAB_V4 = ipaddress.IPv4Network("198.18.0.0/15")
LAB_V6 = ipaddress.IPv6Network("fd00:198:18::/48")

LAN_V4 = ipaddress.IPv4Network("198.18.0.0/24")
LAN_V6 = ipaddress.IPv6Network("fd00:198:18::/64")
SERVICE_CIDR_V4 = ipaddress.IPv4Network("198.18.192.0/18")
SERVICE_CIDR_V6 = ipaddress.IPv6Network("fd00:198:18:ff::/108")

API_ADDRESS = ipaddress.IPv4Address("198.18.0.1")  # on the host end of the API veth
API_PORT = 6443
CLIENT_HOST_INDEX = 100  # client is 198.18.0.100 on the LAN and 198.18.1.100 on its own segment
ROUTER_HOST_INDEX = 2  # the BGP router (BIRD) is 198.18.0.2 on the LAN (and 198.18.1.1 on the client's segment)
CLIENT_NET_V4 = ipaddress.IPv4Network("198.18.1.0/24")
CLIENT_NET_V6 = ipaddress.IPv6Network("fd00:198:18:1::/64")
NODE_HOST_INDEX_BASE = 10  # node-N is 198.18.0.(10+N)
MAX_NODES = 89  # node addresses stay below the client's
L2_VIPS_V4 = ipaddress.IPv4Network("198.18.0.224/27")  # on the LAN: reachable once a node answers ARP
INGRESS_VIPS_V4 = ipaddress.IPv4Network("198.18.0.216/29")  # on the LAN too: the lab's Ingress address pool
L2_VIPS_V6 = ipaddress.IPv6Network("fd00:198:18::f00/120")
BGP_VIPS_V4 = ipaddress.IPv4Network("198.18.100.128/25")  # off the LAN: reachable once the router learns them
BGP_VIPS_V6 = ipaddress.IPv6Network("fd00:198:18:f00::80/121")
LAB_ASN = 64512  # router and nodes share it (iBGP), so LOCAL_PREF reaches the router as configured

NETNS_PREFIX = "portico-"  # every namespace the lab creates starts with this
LAN_NETNS = NETNS_PREFIX + "lan"  # holds the LAN bridge; its existence marks a running lab
API_HOST_IFACE = "portico-api"  # the only interface the lab puts in the host namespace
POD_BRIDGE = "cbr0"  # per-node bridge the pods of that node attach to
POD_GATEWAY_INDEX = 1  # .1 of each pod CIDR is the node's address on cbr0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def node_name(index: int) -> str:
    return f"node-{index}"


def host_netns(host: str) -> str:
    """The network namespace that plays lab host `host` (client, node-1, ...)."""
    return NETNS_PREFIX + host


def pod_netns(pod_uid: str) -> str:
    return f"{NETNS_PREFIX}pod-{pod_uid[:8]}"


def pod_host_iface(pod_uid: str) -> str:
    """Node-side end of a pod's veth (Linux limits names to 15 bytes)."""
    return f"vp{pod_uid[:8]}"


@dataclass(frozen=True)
class NodeAddressing:
    index: int
    lan_v4: ipaddress.IPv4Address
    lan_v6: ipaddress.IPv6Address
    pod_cidr_v4: ipaddress.IPv4Network
    pod_cidr_v6: ipaddress.IPv6Network

    @property
    def name(self) -> str:
        return node_name(self.index)

    @property
    def pod_cidrs(self) -> tuple[Network, Network]:
        return (self.pod_cidr_v4, self.pod_cidr_v6)

    @property
    def pod_gateways(self) -> tuple[Address, Address]:
        return (self.pod_cidr_v4[POD_GATEWAY_INDEX], self.pod_cidr_v6[POD_GATEWAY_INDEX])


def node_addressing(index: int) -> NodeAddressing:
    if not 1 <= index <= MAX_NODES:
        raise ValueError(f"node index must be 1..{MAX_NODES}, got {index}")
    return NodeAddressing(
        index=index,
        lan_v4=LAN_V4[NODE_HOST_INDEX_BASE + index],
        lan_v6=LAN_V6[NODE_HOST_INDEX_BASE + index],
        pod_cidr_v4=ipaddress.IPv4Network(f"198.19.{index}.0/24"),
        pod_cidr_v6=ipaddress.IPv6Network(f"fd00:198:18:{0x100 + index:x}::/64"),
    )


def client_addresses() -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    return (LAN_V4[CLIENT_HOST_INDEX], LAN_V6[CLIENT_HOST_INDEX])


def client_segment_addresses() -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """The client's addresses behind the router (its source when it reaches BGP VIPs)."""
    return (CLIENT_NET_V4[CLIENT_HOST_INDEX], CLIENT_NET_V6[CLIENT_HOST_INDEX])


def router_addresses() -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """The router's LAN addresses: the peer address of the nodes' BGP sessions."""
    return (LAN_V4[ROUTER_HOST_INDEX], LAN_V6[ROUTER_HOST_INDEX])


def router_client_side_addresses() -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """The router's addresses on the client's segment: the client's gateway to BGP VIPs."""
    return (CLIENT_NET_V4[1], CLIENT_NET_V6[1])


def in_lab_ranges(address: Address | Network) -> bool:
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv4Network):
        return (address in LAB_V4) if isinstance(address, ipaddress.IPv4Address) else address.subnet_of(LAB_V4)
    return (address in LAB_V6) if isinstance(address, ipaddress.IPv6Address) else address.subnet_of(LAB_V6)
