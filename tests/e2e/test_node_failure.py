"""A node dies (its LAN link goes down): the other nodes take its endpoints out of rotation from their own
heartbeats, long before Kubernetes could notice, and take them back when it returns.

The client reaches this module's pool through node-1 (a static route); the Deployment's pods are on both
nodes, externalTrafficPolicy Cluster, so node-1 forwards part of the new flows to node-2's pods.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from portico.dev import addressing
from tests.e2e.conftest import Lab, wait_for

POOL_CIDR = "198.18.100.80/28"
NODE1_LAN = "198.18.0.11"
APP = "nf"
MANIFESTS = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: node-failure}}
    spec: {{addresses: [{POOL_CIDR}]}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: {APP}, namespace: default}}
    spec:
      replicas: 4
      selector: {{matchLabels: {{app: {APP}}}}}
      template:
        metadata: {{labels: {{app: {APP}}}}}
        spec:
          containers:
            - name: echo
              image: portico.dev/echo
              ports: [{{name: http, containerPort: 8080, protocol: TCP}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: {APP}, namespace: default}}
    spec:
      type: LoadBalancer
      allocateLoadBalancerNodePorts: false
      selector: {{app: {APP}}}
      ports: [{{name: http, port: 80, targetPort: http, protocol: TCP}}]
""")


def running_pods(lab: Lab) -> dict[str, str]:
    items = lab.get("pods", "-l", f"app={APP}")["items"]
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and not p["metadata"].get("deletionTimestamp")}


def pod_addresses_on(lab: Lab, node: str) -> set[str]:
    return {p["status"]["podIP"] for p in lab.get("pods", "-l", f"app={APP}")["items"]
            if p["spec"]["nodeName"] == node and p["status"].get("podIP")}


def backends_on_node1(lab: Lab, vip: str) -> set[str]:
    out = lab.exec_in("node-1", "nft", "-j", "list", "map", "inet", "portico", "backends4_tcp").stdout
    elements = json.loads(out)["nftables"][1]["map"].get("elem", [])
    return {value["concat"][0] for key, value in elements if key["concat"][0] == vip}


@pytest.fixture(scope="module")
def service(lab: Lab) -> Iterator[str]:
    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
    lab.exec_in("client", "ip", "route", "add", POOL_CIDR, "via", NODE1_LAN)
    try:
        pods = wait_for(lambda: running_pods(lab) if len(running_pods(lab)) == 4 else None, 60, "4 pods running")
        assert set(pods.values()) == {"node-1", "node-2"}, pods
        ingress = wait_for(lambda: lab.get("service", APP).get("status", {}).get("loadBalancer", {}).get("ingress"),
                           20, "an address")
        vip = ingress[0]["ip"]
        wait_for(lambda: len(backends_on_node1(lab, vip)) == 4, 10, "node-1 forwards to all four pods")
        yield vip
    finally:
        lab.exec_in("client", "ip", "route", "del", POOL_CIDR)
        lab.kubectl("delete", "deployment,service", APP, "--ignore-not-found")
        lab.kubectl("delete", "ippool", "node-failure", "--wait=false")


def error_window(result: dict[str, Any], since: float) -> tuple[float, int]:
    """Seconds from `since` (epoch) to the start of the last new flow that failed, and how many failed."""
    start = result["start"]
    failed = [start + t for t, pod, _ in result["flows"] if pod is None and start + t >= since]
    return (max(failed) - since if failed else 0.0), len(failed)


def test_a_dead_nodes_endpoints_leave_rotation_within_a_second(lab: Lab, service: str) -> None:
    vip = service
    out: dict[str, Any] = {}

    def run() -> None:
        r = subprocess.run(["ip", "netns", "exec", addressing.host_netns("client"), sys.executable, "-m",
                            "portico.dev.flows", vip, "--rate", "100", "--duration", "5", "--timeout", "0.3"],
                           capture_output=True, text=True, check=True)
        out["client"] = json.loads(r.stdout)
    meter = threading.Thread(target=run)
    meter.start()
    time.sleep(1.5)
    down_at = time.time()
    subprocess.run(["ip", "-n", addressing.host_netns("node-2"), "link", "set", "eth0", "down"], check=True)
    try:
        meter.join()
        window, failed = error_window(out["client"], down_at)
        total = len(out["client"]["flows"])
        print(f"node-2's link down: new flows failed for {window:.3f} s ({failed} of {total}), Portico's node "
              "liveness on")
        assert window < 1.0, f"new flows to node-2's pods kept failing for {window:.3f} s"
        assert pod_addresses_on(lab, "node-2").isdisjoint(backends_on_node1(lab, vip))
    finally:
        subprocess.run(["ip", "-n", addressing.host_netns("node-2"), "link", "set", "eth0", "up"], check=True)
    back_at = time.monotonic()
    wait_for(lambda: len(backends_on_node1(lab, vip)) == 4, 10, "node-2's pods back in node-1's rules")
    print(f"node-2 back: its pods in rotation again after {time.monotonic() - back_at:.2f} s (hold-down included)")
