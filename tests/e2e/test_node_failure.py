"""A node dies (its LAN link goes down): the other nodes take its endpoints out of rotation from their own
heartbeats, long before Kubernetes could notice, and take them back when it returns.

A lab of three nodes (`--lab-nodes=3`). The client reaches this module's pool through node-1 (a static route);
the Deployment's six pods are on all three nodes, externalTrafficPolicy Cluster, so node-1 forwards part of
the new flows to node-3's pods, and node-3 is the one that dies.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from portico.dev import addressing
from tests.e2e.conftest import Lab, wait_for
from tests.e2e.routed_app import HTTP, App, routed_app, running_pods

POOL_CIDR = "198.18.100.80/28"
APP = "nf"
REPLICAS = 6
FAILED = "node-3"
# How long the run without node liveness lasts: the node lifecycle controller took 70.5 s in one run; in others new
# flows still failed now and then near the end of the run (the last at 88.5 s of 90, 143.9 of 150: not explained yet),
# so the test checks the pods left node-1's rules before the link came back, not when the last flow failed.
KUBERNETES_RUN = 150.0


def pod_addresses_on(lab: Lab, node: str) -> set[str]:
    return {p["status"]["podIP"] for p in lab.get("pods", "-l", f"app={APP}")["items"]
            if p["spec"]["nodeName"] == node and p["status"].get("podIP")}


def backends_on_node1(lab: Lab, vip: str) -> set[str]:
    out = lab.exec_in("node-1", "nft", "-j", "list", "map", "inet", "portico", "backends4_tcp").stdout
    elements = json.loads(out)["nftables"][1]["map"].get("elem", [])
    return {value["concat"][0] for key, value in elements if key["concat"][0] == vip}


@pytest.fixture(scope="module")
def service(lab: Lab) -> Iterator[str]:
    with routed_app(lab, App(APP, "node-failure", POOL_CIDR, REPLICAS, (HTTP,), (("http", 80, "TCP"),))) as (
            vip, pods):
        assert set(pods.values()) == {"node-1", "node-2", "node-3"}, pods
        wait_for(lambda: len(backends_on_node1(lab, vip)) == REPLICAS, 10, "node-1 forwards to every pod")
        yield vip


WINDOWS: dict[str, float] = {}  # how long new flows failed, per way of noticing: printed side by side


def measure_link_down(lab: Lab, vip: str, duration: float, rate: int) -> tuple[float, int, int]:
    """node-3's link goes down 1.5 s into a run of the client's new-flow meter: (seconds new flows kept failing
    from then on, failed, total). The link stays down until the caller restores it."""
    out: dict[str, Any] = {}

    def run() -> None:
        r = subprocess.run(["ip", "netns", "exec", addressing.host_netns("client"), sys.executable, "-m",
                            "portico.dev.flows", vip, "--rate", str(rate), "--duration", str(duration),
                            "--timeout", "0.3"], capture_output=True, text=True, check=True)
        out["client"] = json.loads(r.stdout)
    meter = threading.Thread(target=run)
    meter.start()
    time.sleep(1.5)
    down_at = time.time()
    subprocess.run(["ip", "-n", addressing.host_netns(FAILED), "link", "set", "eth0", "down"], check=True)
    meter.join()
    window, failed = error_window(out["client"], down_at)
    return window, failed, len(out["client"]["flows"])


def link_up(lab: Lab, vip: str) -> None:
    subprocess.run(["ip", "-n", addressing.host_netns(FAILED), "link", "set", "eth0", "up"], check=True)


def set_node_liveness(lab: Lab, value: str) -> None:
    lab.kubectl("set", "env", "daemonset/portico-agent", "-n", "portico-system", f"PORTICO_NODE_LIVENESS={value}")
    lab.kubectl("rollout", "status", "daemonset/portico-agent", "-n", "portico-system", "--timeout=180s")


def error_window(result: dict[str, Any], since: float) -> tuple[float, int]:
    """Seconds from `since` (epoch) to the start of the last new flow that failed, and how many failed."""
    start = result["start"]
    failed = [start + t for t, pod, _ in result["flows"] if pod is None and start + t >= since]
    return (max(failed) - since if failed else 0.0), len(failed)


def test_a_dead_nodes_endpoints_leave_rotation_within_a_second(lab: Lab, service: str) -> None:
    vip = service
    try:
        window, failed, total = measure_link_down(lab, vip, 5.0, 100)
        WINDOWS["Portico's node liveness"] = window
        print(f"{FAILED}'s link down: new flows failed for {window:.3f} s ({failed} of {total}), Portico's node "
              "liveness on")
        assert window < 1.0, f"new flows to {FAILED}'s pods kept failing for {window:.3f} s"
        assert pod_addresses_on(lab, FAILED).isdisjoint(backends_on_node1(lab, vip))
        assert len(backends_on_node1(lab, vip)) == REPLICAS - 2  # node-1's and node-2's pods stay
    finally:
        link_up(lab, vip)
    back_at = time.monotonic()
    wait_for(lambda: len(backends_on_node1(lab, vip)) == REPLICAS, 10, f"{FAILED}'s pods back in node-1's rules")
    print(f"{FAILED} back: its pods in rotation again after {time.monotonic() - back_at:.2f} s (hold-down included)")


def test_without_it_kubernetes_takes_its_grace_period(lab: Lab, service: str) -> None:
    """The same failure with the agents' node liveness off: only the node lifecycle controller (the node's Lease
    expires, then its pods are marked not ready) takes the pods out of the EndpointSlice."""
    vip = service
    set_node_liveness(lab, "off")
    try:
        wait_for(lambda: len(backends_on_node1(lab, vip)) == REPLICAS, 30, "node-1 forwards to every pod")
        try:
            window, failed, total = measure_link_down(lab, vip, KUBERNETES_RUN, 20)
            WINDOWS["Kubernetes (node lifecycle controller)"] = window
            taken_out = pod_addresses_on(lab, FAILED).isdisjoint(backends_on_node1(lab, vip))  # link still down
        finally:
            link_up(lab, vip)
        print(f"{FAILED}'s link down, client's new flows failing for: " + "; ".join(
            f"{way} {seconds:.2f} s" for way, seconds in WINDOWS.items()) + f" ({failed} of {total} failed)")
        assert window > 5.0, f"with node liveness off, flows failed for only {window:.2f} s: was it off?"
        assert taken_out, f"Kubernetes never took {FAILED}'s pods out of node-1's rules within the run"
        wait_for(lambda: len(running_pods(lab, APP)) == REPLICAS, 60, f"{FAILED} Ready again, its pods ready")
        wait_for(lambda: len(backends_on_node1(lab, vip)) == REPLICAS, 30, f"{FAILED}'s pods back in node-1's rules")
    finally:
        set_node_liveness(lab, "on")
