"""Rollouts behind a VIP, under load: a rolling update of a 4-replica Deployment while wrk runs through its VIP,
with Portico's readiness gate on, and the same without it, side by side.

Both Deployments honour the termination contract (a preStop hook, then the echo's --drain: it keeps serving for
a while after SIGTERM, answering `Connection: close` so keep-alive clients move on) and have a readiness probe.
The gated one's pods count as ready only once every node's rules forward to them (portico.io/programmed).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Lab, wait_for
from tests.e2e.routed_app import NODE1_LAN

pytestmark = pytest.mark.e2e

POOL, CIDR = "rollout", "198.18.100.112/28"
GATE = "portico.io/programmed"
REPLICAS = 4
WRK_SECONDS = 30


def manifests(name: str, gated: bool) -> list[dict[str, Any]]:
    meta = {"name": name, "namespace": "default"}
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": 10,
        "containers": [{
            "name": "echo", "image": "portico.dev/echo", "args": ["--drain=2"],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
            "lifecycle": {"preStop": {"sleep": {"seconds": 1}}}}]}
    if gated:
        pod["readinessGates"] = [{"conditionType": GATE}]
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": REPLICAS, "selector": {"matchLabels": {"app": name}},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {**meta, "annotations": {"portico.io/ip-pool": POOL}},
         "spec": {
            "type": "LoadBalancer", "allocateLoadBalancerNodePorts": False, "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]


def wrk_failures(output: str) -> tuple[int, int]:
    """(requests, failed requests: socket errors and non-2xx/3xx answers) from wrk's report."""
    total = re.search(r"(\d+) requests in", output)
    assert total is not None, output
    requests = int(total.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = (sum(int(g) for g in errors.groups()) if errors else 0) + (int(non_2xx.group(1)) if non_2xx else 0)
    return requests, failed


def ready_pods(lab: Lab, app: str) -> list[dict[str, Any]]:
    return [p for p in lab.get("pods", "-l", f"app={app}")["items"] if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def serving(lab: Lab, name: str) -> str:
    """The Service's address, once all its pods are ready."""
    wait_for(lambda: len(ready_pods(lab, name)) == REPLICAS, 60, f"{name} pods ready")
    ingress = wait_for(lambda: lab.get("service", name).get("status", {}).get("loadBalancer", {}).get("ingress"),
                       20, f"{name} gets an address")
    return str(ingress[0]["ip"])


def roll_under_load(lab: Lab, name: str, vip: str) -> tuple[int, int, float]:
    """(requests, failed, rollout seconds) of a rollout restart while wrk runs through the VIP."""
    out: dict[str, str] = {}
    wrk = threading.Thread(target=lambda: out.update(text=lab.exec_in(
        "client", "wrk", "-t1", "-c8", f"-d{WRK_SECONDS}s", "--timeout", "2s", f"http://{vip}/").stdout))
    wrk.start()
    time.sleep(3)
    started = time.monotonic()
    lab.kubectl("rollout", "restart", f"deployment/{name}")
    lab.kubectl("rollout", "status", f"deployment/{name}", "--timeout=90s")
    took = time.monotonic() - started
    assert took < WRK_SECONDS - 5, f"the rollout took {took:.1f} s: longer than the load it ran under"
    wrk.join()
    return (*wrk_failures(out["text"]), took)


def test_a_rollout_under_load_fails_no_request_with_the_readiness_gate(lab: Lab) -> None:
    lab.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([
        {"apiVersion": "portico.io/v1alpha1", "kind": "IPPool", "metadata": {"name": POOL},
         "spec": {"addresses": [CIDR]}},
        *manifests("gated", gated=True), *manifests("plain", gated=False)]))
    lab.exec_in("client", "ip", "route", "add", CIDR, "via", NODE1_LAN)
    try:
        vips = {name: serving(lab, name) for name in ("gated", "plain")}
        # The gate passed for every gated pod, set by the agent of its node, and only then was the pod Ready.
        for pod in ready_pods(lab, "gated"):
            conditions = {c["type"]: c for c in pod["status"]["conditions"]}
            assert conditions[GATE]["status"] == "True" and conditions[GATE]["reason"] == "Programmed", conditions
            assert conditions["Ready"]["lastTransitionTime"] >= conditions[GATE]["lastTransitionTime"]

        results = {name: roll_under_load(lab, name, vips[name]) for name in ("gated", "plain")}
        for name, (requests, failed, took) in results.items():
            print(f"rollout of 4 replicas, readiness gate {'on ' if name == 'gated' else 'off'}: {requests} requests, "
                  f"{failed} failed, rollout {took:.1f} s")
        requests, failed, _ = results["gated"]
        assert requests > 1000 and failed == 0
        assert results["plain"][0] > 1000  # traffic flowed through the other rollout too (its failures: printed)
        assert {p["metadata"]["name"] for p in ready_pods(lab, "gated")}  # the new pods passed their gate
    finally:
        lab.exec_in("client", "ip", "route", "del", CIDR)
        lab.kubectl("delete", "deployment,service", "gated", "plain", "--ignore-not-found")
        lab.kubectl("delete", "ippool", POOL, "--wait=false")
