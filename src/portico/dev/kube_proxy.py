"""kube-proxy on the lab's nodes (`portico dev up --kube-proxy=nftables|iptables`), as most clusters run it.

The real kube-proxy, built from the same Kubernetes module as the control plane, one per node inside the
node's network namespace, with the identity kube-proxy has in a cluster (system:kube-proxy, bound to
system:node-proxier by the default RBAC). It gives the lab ClusterIPs and NodePorts, and programs its
own rules for the Services' LoadBalancer IPs next to Portico's: what the e2e tests run against.
"""

from __future__ import annotations

from pathlib import Path

from portico.dev import addressing as a

CLUSTER_CIDRS = "198.19.0.0/16,fd00:198:18:100::/56"  # every node's pod CIDR (addressing.py)


def daemon_name(node: str) -> str:
    return f"kube-proxy-{node}"


def kube_proxy_argv(bin_dir: Path, node: str, mode: str, kubeconfig: Path) -> list[str]:
    return [
        "ip", "netns", "exec", a.host_netns(node), str(bin_dir / "kube-proxy"),
        f"--kubeconfig={kubeconfig}", f"--hostname-override={node}", f"--proxy-mode={mode}",
        f"--cluster-cidr={CLUSTER_CIDRS}",
        # Each in its node's namespace: these ports are the node's own.
        "--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
        # Conntrack table sizes are global to the machine, not the lab's to change.
        "--conntrack-max-per-core=0", "--conntrack-min=0",
    ]
