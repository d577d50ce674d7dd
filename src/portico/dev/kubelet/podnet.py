"""A pod's network namespace, wired to its node's pod bridge (I/O)."""

from __future__ import annotations

from portico.dev import addressing as a
from portico.dev.netns import delete_netns
from portico.dev.shell import run


def create_pod_network(pod_uid: str, node: a.NodeAddressing, v4: a.Address, v6: a.Address) -> str:
    """Create (or recreate) the pod's namespace with `eth0` holding v4 and v6; return its name."""
    netns, host_iface = a.pod_netns(pod_uid), a.pod_host_iface(pod_uid)
    node_ns = a.host_netns(node.name)
    delete_pod_network(pod_uid, node)  # idempotent: a half-made namespace from a crash is rebuilt
    gw4, gw6 = node.pod_gateways
    for argv in (
        ["ip", "netns", "add", netns],
        ["ip", "-n", netns, "link", "set", "lo", "up"],
        ["ip", "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"],
        ["ip", "-n", node_ns, "link", "add", host_iface, "type", "veth", "peer", "name", "eth0", "netns", netns],
        ["ip", "-n", node_ns, "link", "set", host_iface, "master", a.POD_BRIDGE, "up"],
        ["ip", "-n", netns, "addr", "add", f"{v4}/{node.pod_cidr_v4.prefixlen}", "dev", "eth0"],
        ["ip", "-n", netns, "addr", "add", f"{v6}/{node.pod_cidr_v6.prefixlen}", "dev", "eth0", "nodad"],
        ["ip", "-n", netns, "link", "set", "eth0", "up"],
        ["ip", "-n", netns, "route", "add", "default", "via", str(gw4)],
        ["ip", "-n", netns, "-6", "route", "add", "default", "via", str(gw6)],
        # A reused address may still sit in the node's neighbour cache with the previous pod's MAC (30 s and
        # more of "unreachable"); real CNIs announce the new pod, the lab forgets the old entry.
        ["ip", "-n", node_ns, "neigh", "flush", "to", str(v4)],
        ["ip", "-n", node_ns, "-6", "neigh", "flush", "to", str(v6)],
    ):
        run(argv)
    return netns


def delete_pod_network(pod_uid: str, node: a.NodeAddressing) -> None:
    delete_netns(a.pod_netns(pod_uid))  # its veth goes with it
    run(["ip", "-n", a.host_netns(node.name), "link", "del", a.pod_host_iface(pod_uid)], check=False)
