"""Active health monitors in the lab: a backend made sick while Kubernetes still calls it ready leaves rotation on
every node within interval x fall + 0.5 s, as clients see it, and comes back after rise.

The client reaches this module's pool through node-1 (a static route); node-2 sends to the VIP itself. The sick
pod runs on node-2, so node-1 acts on what node-2's heartbeats tell it, and node-2 on its own probes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from portico.dev import addressing
from tests.e2e.conftest import Lab, wait_for
from tests.e2e.routed_app import HTTP, HTTPS, NODE1_LAN, UDP, App, routed_app

POOL_CIDR = "198.18.100.64/28"
INTERVAL, FALL, RISE = 0.5, 2, 2
BUDGET = INTERVAL * FALL + 0.5  # the promise: no new flow reaches a sick backend after this
APP = "hc"

def policy(check: dict[str, Any]) -> str:
    spec = {"targetRefs": [{"kind": "Service", "name": APP}],
            "healthCheck": {"interval": f"{int(INTERVAL * 1000)}ms", "timeout": "250ms", "unhealthyThreshold": FALL,
                            "healthyThreshold": RISE, **check}}
    return json.dumps({"apiVersion": "portico.io/v1alpha1", "kind": "TrafficPolicy",
                       "metadata": {"name": APP, "namespace": "default"}, "spec": spec})


@pytest.fixture(scope="module")
def service(lab: Lab) -> Iterator[tuple[str, dict[str, str]]]:
    """The VIP, and pod name -> node of the three backends (spread over both nodes)."""
    with routed_app(lab, App(APP, "health", POOL_CIDR, 3, (HTTP, UDP, HTTPS),
                                 (("http", 80, "TCP"), ("udp", 9090, "UDP")))) as (vip, pods):
        assert set(pods.values()) == {"node-1", "node-2"}, pods
        # node-2's own connections to the VIP: a route for connect() to find, then node-2's rules DNAT them.
        lab.exec_in("node-2", "ip", "route", "add", POOL_CIDR, "via", NODE1_LAN)
        try:
            yield vip, pods
        finally:
            lab.exec_in("node-2", "ip", "route", "del", POOL_CIDR)


def signal_pod(lab: Lab, pod: str, signum: int, namespace: str = "default") -> None:
    uid = lab.get("pod", pod, "-n", namespace)["metadata"]["uid"]
    pids = subprocess.run(["ip", "netns", "pids", addressing.pod_netns(uid)], capture_output=True, text=True,
                          check=True).stdout.split()
    assert pids, f"no process in {pod}'s namespace"
    for pid in pids:
        os.kill(int(pid), signum)


def became(lab: Lab, pod: str, state: str, after: float, namespace: str = "default") -> float:
    """When (epoch) the echo pod says it became `state`, at or after `after`: the budget counts from there, not
    from the signal (a loaded machine may take a while to run the pod's handler)."""
    def since() -> float | None:
        log = lab.portico("dev", "logs", f"pod/{namespace}/{pod}", check=False).stdout
        times = [float(t) for t in re.findall(rf"echo {re.escape(pod)}: {state} since ([\d.]+)", log)]
        return next((t for t in reversed(times) if t >= after), None)
    return float(wait_for(since, 10, f"{pod} saying it is {state}"))


def policy_counts(lab: Lab) -> tuple[int, int] | None:
    status = lab.get("trafficpolicy", APP).get("status", {})
    return (status["healthy"], status["total"]) if "healthy" in status else None


def meter(host: str, vip: str, proto: str, duration: float, out: dict[str, Any]) -> threading.Thread:
    port = "80" if proto == "tcp" else "9090"

    def run() -> None:
        r = subprocess.run(["ip", "netns", "exec", addressing.host_netns(host), sys.executable, "-m",
                            "portico.dev.flows", vip, "--proto", proto, "--port", port, "--rate", "50",
                            "--duration", str(duration)], capture_output=True, text=True, check=True)
        out[host] = json.loads(r.stdout)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def last_bad(result: dict[str, Any], victim: str, since: float) -> tuple[float | None, int]:
    """When, after `since` (epoch), a new flow last reached the victim or failed; and how many reached it
    before then (the meter must see the victim while it is well, or it proves nothing)."""
    start = result["start"]
    bad = [start + t for t, pod, _ in result["flows"] if start + t >= since and pod in (victim, None)]
    before = sum(1 for t, pod, _ in result["flows"] if start + t < since and pod == victim)
    return (max(bad) - since if bad else None), before


CASES = [
    ("TCP", {"type": "TCP"}, signal.SIGUSR2, "tcp"),  # the pod stops listening: resets
    ("HTTP", {"type": "HTTP", "http": {"path": "/healthz", "expectedStatuses": ["200"]}}, signal.SIGUSR1, "tcp"),
    ("HTTPS", {"type": "HTTPS", "port": 8443}, signal.SIGUSR1, "tcp"),
    ("UDP", {"type": "UDP", "udp": {"send": "ping", "expect": "pod"}}, signal.SIGUSR1, "udp"),
    ("ICMP", {"type": "ICMP"}, signal.SIGUSR1, "tcp"),  # the pod's kernel stops answering echo requests
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_sick_backend_leaves_rotation_on_every_node_within_the_budget_and_returns(
        lab: Lab, service: tuple[str, dict[str, str]], case: tuple[str, dict[str, Any], int, str]) -> None:
    kind, check, sickness, proto = case
    vip, pods = service
    lab.kubectl("apply", "-f", "-", stdin=policy(check))
    wait_for(lambda: policy_counts(lab) == (3, 3), 20, f"{kind}: all three healthy")
    victim = sorted(p for p, node in pods.items() if node == "node-2")[0]

    results: dict[str, Any] = {}
    threads = [meter(host, vip, proto, 5.0, results) for host in ("client", "node-2")]
    time.sleep(1.5)
    signalled = time.time()
    signal_pod(lab, victim, sickness)
    for thread in threads:
        thread.join()
    sick_at = became(lab, victim, "refusing" if sickness == signal.SIGUSR2 else "sick", signalled)
    figures = {}
    for host, result in results.items():
        window, before = last_bad(result, victim, sick_at)
        seen = Counter((pod, note) for _, pod, note in result["flows"])
        assert before > 0, f"{kind} from {host}: the meter never reached {victim} while it was well: {seen}"
        if window is None or window > BUDGET:  # what each node's table and report said then
            for node in ("node-1", "node-2"):
                print(node, lab.exec_in(node, "nft", "list", "map", "inet", "portico", f"backends4_{proto}").stdout)
                print(node, lab.get("porticonode", node)["status"].get("health"))
        assert window is not None and window <= BUDGET, (
            f"{kind} from {host}: a new flow reached the sick {victim} {window:.3f}s after it fell sick "
            f"(budget {BUDGET}s); after: {[f for f in result['flows'] if result['start'] + f[0] >= sick_at][:40]}")
        figures[host] = round(window, 3)
    print(f"{kind}: last new flow to the sick pod after {figures} s (budget {BUDGET} s)")

    events = wait_for(lambda: [e for e in lab.get("events", "--field-selector", f"involvedObject.name={APP}")["items"]
                               if e["reason"] == "BackendUnhealthy" and victim in e["message"]
                               and f"is down: {kind} check failed" in e["message"]], 10,
                      f"{kind}: a BackendUnhealthy event")
    assert events[0]["type"] == "Warning"
    wait_for(lambda: policy_counts(lab) == (2, 3), 10, f"{kind}: the policy's status says 2/3 healthy")
    row = lab.kubectl("get", "trafficpolicy", APP, "--no-headers").split()
    assert row[3:5] == ["2", "3"], row  # HEALTHY, BACKENDS
    metrics = lab.exec_in("client", "curl", "-s", "http://198.18.0.12:9470/metrics").stdout  # node-2's agent
    victim_ip = lab.get("pod", victim)["status"]["podIP"]
    port = "0" if kind in ("ICMP", "HTTPS") else "9090" if kind == "UDP" else "8080"
    endpoint = victim_ip if port == "0" else f"{victim_ip}:{port}"
    assert f'portico_backend_up{{endpoint="{endpoint}",service="default/{APP}"}} 0.0' in metrics, metrics[-2000:]
    assert f'portico_health_transitions_total{{service="default/{APP}",to="down"}}' in metrics
    assert f'portico_health_probe_duration_seconds_count{{type="{kind}"}}' in metrics

    well_at = time.time()
    signal_pod(lab, victim, signal.SIGHUP)
    wait_for(lambda: policy_counts(lab) == (3, 3), 10, f"{kind}: back to 3/3 after {RISE} good checks")
    back: dict[str, Any] = {}
    meter("client", vip, proto, 1.0, back).join()
    assert victim in {pod for _, pod, _ in back["client"]["flows"]}, f"{kind}: {victim} takes new flows again"
    print(f"{kind}: healthy again and in rotation {time.time() - well_at:.2f} s after it recovered")


def announcers(lab: Lab, vip: str) -> list[str]:
    return [n["metadata"]["name"] for n in lab.get("porticonodes")["items"]
            if vip in n.get("status", {}).get("layer2", [])]


def announced(lab: Lab) -> dict[str, Any]:
    conditions = lab.get("service", APP).get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == "portico.io/Announced"), {})


def test_withdraw_stops_every_node_announcing_while_no_backend_is_healthy(
        lab: Lab, service: tuple[str, dict[str, str]]) -> None:
    vip, pods = service
    lab.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "portico.io/v1alpha1", "kind": "L2Advertisement", "metadata": {"name": "health"},
        "spec": {"ipPools": ["health"]}}))
    try:
        lab.kubectl("apply", "-f", "-", stdin=policy({"type": "TCP", "whenNoneHealthy": "Withdraw"}))
        wait_for(lambda: policy_counts(lab) == (3, 3), 20, "all three healthy")
        wait_for(lambda: announcers(lab, vip), 10, "one node answering ARP for the VIP")
        for pod in pods:
            signal_pod(lab, pod, signal.SIGUSR2)
        sick_at = time.monotonic()
        wait_for(lambda: not announcers(lab, vip), 10, "no node announcing the VIP")
        print(f"Withdraw: no node announces {vip} {time.monotonic() - sick_at:.2f} s after every backend failed")
        condition = wait_for(lambda: announced(lab) if announced(lab).get("reason") == "NoHealthyBackend" else None,
                             10, "the Announced condition saying why")
        assert condition["status"] == "False" and "whenNoneHealthy: Withdraw" in condition["message"], condition
        for pod in pods:
            signal_pod(lab, pod, signal.SIGHUP)
        wait_for(lambda: announcers(lab, vip), 15, "the VIP announced again once a backend is healthy")
        wait_for(lambda: announced(lab).get("status") == "True", 10, "Announced again")
    finally:
        lab.kubectl("delete", "l2advertisement", "health", "--ignore-not-found")
