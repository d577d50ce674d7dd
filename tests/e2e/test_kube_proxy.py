"""Portico beside the real kube-proxy (`--kube-proxy=nftables|iptables`; collected only then): kube-proxy works
(ClusterIPs), and the traffic from outside to a Service's VIP takes Portico's path, not kube-proxy's, although
kube-proxy also programs the LoadBalancer IP (ipMode VIP)."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Lab, wait_for
from tests.e2e.test_dataplane_lab import NODE1_LAN, deploy, probe, ready_pods

POOL = textwrap.dedent("""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {name: kube-proxy}
    spec: {addresses: [198.18.100.48/28]}
""")

ROUND_ROBIN = textwrap.dedent("""
    apiVersion: v1
    kind: Service
    metadata: {name: kp-rr, namespace: default, annotations: {portico.io/lb-algorithm: round-robin}}
    spec:
      type: LoadBalancer
      allocateLoadBalancerNodePorts: false
      selector: {app: kp}
      ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
""")


@pytest.fixture(scope="module")
def service(lab: Lab) -> Iterator[str]:
    assert lab.kube_proxy is not None
    lab.kubectl("apply", "-f", "-", stdin=POOL)
    lab.exec_in("client", "ip", "route", "add", "198.18.100.48/28", "via", NODE1_LAN)
    vip = deploy(lab, "kp", 2)
    yield vip
    lab.kubectl("delete", "deployment,service", "kp", "--ignore-not-found")
    lab.kubectl("delete", "service", "kp-rr", "--ignore-not-found")
    lab.exec_in("client", "ip", "route", "del", "198.18.100.48/28")
    lab.kubectl("delete", "ippool", "kube-proxy")


def test_kube_proxy_programs_the_nodes_and_cluster_ips_work(lab: Lab, service: str) -> None:
    for node in ("node-1", "node-2"):
        if lab.kube_proxy == "nftables":
            tables = lab.exec_in(node, "nft", "list", "tables").stdout
            assert "table ip kube-proxy" in tables and "table ip6 kube-proxy" in tables, tables
        else:
            rules = lab.exec_in(node, "iptables-save", "-t", "nat").stdout
            assert ":KUBE-SERVICES" in rules, rules
    cluster_ip = lab.get("service", "kp")["spec"]["clusterIP"]
    # kube-proxy, not Portico, serves ClusterIPs: from a node, a ClusterIP reaches the pods.
    answer = wait_for(lambda: lab.exec_in("node-1", "curl", "-s", "--max-time", "2", f"http://{cluster_ip}/").stdout,
                      30, f"ClusterIP {cluster_ip} answering from node-1")
    assert json.loads(answer)["pod"] in ready_pods(lab, "kp")


def test_external_traffic_to_the_vip_takes_portico_s_path(lab: Lab, service: str) -> None:
    lab.kubectl("apply", "-f", "-", stdin=ROUND_ROBIN)
    vip = wait_for(lambda: (lab.get("service", "kp-rr").get("status", {}).get("loadBalancer", {})
                            .get("ingress") or [{}])[0].get("ip"), 30, "kp-rr's VIP")
    wait_for(lambda: sum(probe(lab, vip, "tcp", 2).values()) == 2, 30, "kp-rr answering")
    before = _packets(lab, vip)
    seen = probe(lab, vip, "tcp", 40)
    # Strict alternation is Portico's round-robin; kube-proxy would pick at random.
    assert sorted(seen.values()) == [20, 20], seen
    assert _packets(lab, vip) > before  # counted by Portico's table on node-1, the node the client routes to


def _packets(lab: Lab, vip: str) -> float:
    metrics = lab.exec_in("client", "curl", "-s", f"http://{NODE1_LAN}:9470/metrics").stdout
    return sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith("portico_frontend_packets_total") and re.search(rf'vip="{re.escape(vip)}"', line))
