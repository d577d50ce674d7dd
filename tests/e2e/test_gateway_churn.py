"""A Gateway under load while its configuration churns: wrk through the Gateway the whole time — one opening a
connection per request, one on keep-alive connections — and in the same run 100 HTTPRoute changes (each a seamless
HAProxy reload, timed from the API write to the client being served the change: p50/p99 printed) and 100 endpoint
changes (an EndpointSlice's endpoints swapped, each a runtime-API update on the nodes, not a reload); the client
reaches the Gateway through node-1. Not one request of either wrk may fail (keep-alive ones survive reloads by
`idle-close-on-response` in portico.dataplane.haproxy)."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from portico.dev.addressing import host_netns, node_addressing
from portico.ports import METRICS_PORT
from tests.e2e.conftest import Lab, wait_for
from tests.e2e.test_gateway import _app, is_true
from tests.e2e.test_rollout import wrk_failures

NS = "churn-e2e"
ADDRESS = "198.18.0.194"
CHANGES = 100
WRK_SECONDS = 150  # longer than both churns take together (asserted)
SETUP = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: churn}}
    spec: {{addresses: [198.18.0.192/29], autoAssign: false}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: GatewayClass
    metadata: {{name: portico-churn}}
    spec: {{controllerName: portico.io/gateway-controller}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {{name: gw, namespace: {NS}}}
    spec:
      gatewayClassName: portico-churn
      addresses: [{{value: {ADDRESS}}}]
      listeners: [{{name: http, port: 80, protocol: HTTP}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: manual, namespace: {NS}}}
    spec: {{ports: [{{name: http, port: 8080}}]}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: main, namespace: {NS}}}
    spec:
      parentRefs: [{{name: gw}}]
      hostnames: [main.example]
      rules: [{{backendRefs: [{{name: manual, port: 8080}}]}}]
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: probe, namespace: {NS}}}
    spec:
      parentRefs: [{{name: gw}}]
      hostnames: [probe.example]
      rules: [{{matches: [{{path: {{type: Exact, value: /v0}}}}], backendRefs: [{{name: manual, port: 8080}}]}}]
    """)


def slice_of(ips: list[str]) -> str:
    """The manual Service's EndpointSlice with these endpoints (port 8080, ready)."""
    return json.dumps({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "manual-1", "namespace": NS, "labels": {"kubernetes.io/service-name": "manual"}},
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]})


def client_curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", host_netns("client"), "curl", "-s", "--max-time", "2", *args],
                          capture_output=True, text=True, timeout=10, check=False)


@pytest.fixture(scope="module")
def pod_ips(lab: Lab) -> Iterator[list[str]]:
    lab.kubectl("create", "namespace", NS)
    lab.kubectl("apply", "-f", "-", stdin=_app("web", NS).replace("replicas: 1", "replicas: 3"))
    lab.kubectl("apply", "-f", "-", stdin=SETUP)
    # node-1 serves the client, by a route rather than by ARP: what is measured is HAProxy's reloads and runtime
    # updates, not the layer-2 announcer (whose failover is test_announce_l2's)
    lab.exec_in("client", "ip", "route", "replace", f"{ADDRESS}/32", "via", str(node_addressing(1).lan_v4))
    try:
        def three() -> list[str] | None:
            pods = lab.get("pods", "-n", NS, "-l", "app=web")["items"]
            ips = [p["status"].get("podIP") for p in pods if any(
                c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
            return sorted(ips) if len(ips) == 3 else None
        ips = wait_for(three, 90, "three web pods ready")
        lab.kubectl("apply", "-f", "-", stdin=slice_of(ips))
        wait_for(lambda: is_true(lab.get("gateway", "gw", "-n", NS), "Programmed"), 60, "the Gateway Programmed")
        try:
            wait_for(lambda: client_curl("-H", "Host: main.example", f"http://{ADDRESS}/").stdout.startswith("{"),
                     60, "the main route served")
        except AssertionError:
            print(diagnosis(lab))
            raise
        yield ips
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=60s")
        lab.kubectl("delete", "gatewayclass", "portico-churn", "--ignore-not-found")
        lab.kubectl("delete", "ippool", "churn", "--ignore-not-found")
        lab.exec_in("client", "ip", "route", "del", f"{ADDRESS}/32")


def haproxy_counts(node: int) -> tuple[float, float]:
    """(reloads, runtime-API updates) from node-N's agent's metrics."""
    text = client_curl(f"http://{node_addressing(node).lan_v4}:{METRICS_PORT}/metrics").stdout
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("portico_haproxy_")}
    return values["portico_haproxy_reloads_total"], values["portico_haproxy_runtime_updates_total"]


def haproxy_log(lab: Lab) -> str:
    """What node-1's HAProxy said (its master's and workers' notices, warnings and alerts: a worker that exited or
    was stopped hard, a reload that failed) — printed when a request failed."""
    agent = next(p["metadata"]["name"] for p in lab.get("pods", "-n", "portico-system", "-l",
                                                       "app.kubernetes.io/name=portico-agent")["items"]
                 if p["spec"].get("nodeName") == "node-1")
    log = lab.portico("dev", "logs", f"pod/portico-system/{agent}", check=False).stdout
    return "\n".join(line for line in log.splitlines() if re.search(r"\[(NOTICE|WARNING|ALERT)\]|haproxy", line)
                     and "Proxy " not in line)[-6000:]


def diagnosis(lab: Lab) -> str:
    """What to read when the Gateway does not answer: the request, the objects' statuses, the agents' logs."""
    agents = [p["metadata"]["name"] for p in lab.get("pods", "-n", "portico-system", "-l",
                                                    "app.kubernetes.io/name=portico-agent")["items"]]
    parts = [client_curl("-v", "-H", "Host: main.example", f"http://{ADDRESS}/").stderr,
             lab.kubectl("get", "gateway,httproute,service,endpointslice", "-n", NS, "-o", "yaml")]
    parts += [lab.portico("dev", "logs", f"pod/portico-system/{a}", check=False).stdout[-3000:] for a in agents]
    return "\n---\n".join(parts)


def route_changes(lab: Lab) -> list[float]:
    """Seconds from each HTTPRoute write to the client being served what it says."""
    took = []
    for i in range(1, CHANGES + 1):
        patch = {"spec": {"rules": [{"matches": [{"path": {"type": "Exact", "value": f"/v{i}"}}],
                                     "backendRefs": [{"name": "manual", "port": 8080}]}]}}
        written = time.monotonic()
        lab.kubectl("patch", "httproute", "probe", "-n", NS, "--type=merge", "-p", json.dumps(patch))
        while client_curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: probe.example",
                          f"http://{ADDRESS}/v{i}").stdout != "200":
            assert time.monotonic() - written < 30, f"route change {i} not served within 30 s"
            time.sleep(0.01)
        took.append(time.monotonic() - written)
    return took


def endpoint_changes(lab: Lab, ips: list[str], done: dict[str, Any]) -> None:
    """Each change leaves out another of the three pods (two always serve)."""
    for i in range(CHANGES):
        lab.kubectl("apply", "-f", "-", stdin=slice_of([ip for j, ip in enumerate(ips) if j != i % 3]))
        time.sleep(0.2)
    done["last_left_out"] = ips[(CHANGES - 1) % 3]


def wrk(*headers: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", host_netns("client"), "wrk", "-t1", "-c4", f"-d{WRK_SECONDS}s",
                             "--timeout", "2s", "-H", "Host: main.example", *headers, f"http://{ADDRESS}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_route_and_endpoint_churn_under_load_fails_no_request(lab: Lab, pod_ips: list[str]) -> None:
    before = {index: haproxy_counts(index) for index in (1, 2)}  # the agents' counters: earlier modules' too
    per_request, keep_alive = wrk("-H", "Connection: close"), wrk()
    started = time.monotonic()
    done: dict[str, Any] = {}
    endpoints = threading.Thread(target=endpoint_changes, args=(lab, pod_ips, done))
    endpoints.start()
    took = route_changes(lab)
    endpoints.join()
    churned = time.monotonic() - started
    out, _ = per_request.communicate(timeout=WRK_SECONDS + 30)
    kept, _ = keep_alive.communicate(timeout=30)
    requests, failed = wrk_failures(out)
    kept_requests, kept_failed = wrk_failures(kept)
    cuts = statistics.quantiles(took, n=100)
    print(f"\n{CHANGES} route changes, {CHANGES} endpoint changes in {churned:.1f} s under load: "
          f"a connection per request {requests} requests, {failed} failed; keep-alive {kept_requests} requests, "
          f"{kept_failed} failed; route change to served: p50 {statistics.median(took) * 1000:.0f} ms, "
          f"p99 {cuts[98] * 1000:.0f} ms, max {max(took) * 1000:.0f} ms\n{out}\n{kept}")
    if failed or kept_failed:
        print(haproxy_log(lab))
    assert churned < WRK_SECONDS, "the churn outlasted the load: not all of it was under wrk"
    assert requests > 1000 and failed == 0, out
    assert kept_requests > 1000 and kept_failed == 0, kept
    # Endpoint changes went through the runtime API, not reloads (each node's HAProxy counts both).
    for index in (1, 2):
        reloads, updates = (now - then for now, then in zip(haproxy_counts(index), before[index], strict=True))
        print(f"node-{index}: {reloads:.0f} reloads, {updates:.0f} runtime-API updates")
        assert updates >= CHANGES / 2 and reloads < CHANGES * 1.5, (index, reloads, updates)
    # The last endpoint change is served: the pod it left out answers nothing.
    pods = {p["status"]["podIP"]: p["metadata"]["name"] for p in lab.get("pods", "-n", NS, "-l", "app=web")["items"]}
    names = {json.loads(client_curl("-H", "Host: main.example", f"http://{ADDRESS}/").stdout)["pod"]
             for _ in range(30)}
    assert pods[done["last_left_out"]] not in names and len(names) == 2, names
