"""The lab's real Prometheus: it finds every agent and the controllers through the API server and scrapes them,
and the chart's alert rules fire — a VIP whose last healthy backend fails its health check raises
PorticoVIPNoBackend, and it clears when the backend is well again."""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from portico.dev import prometheus
from tests.e2e.conftest import Lab, wait_for
from tests.e2e.manifests import documents, echo_deployment, lb_service
from tests.e2e.test_health import signal_pod

NS = "prom-e2e"
SETUP = textwrap.dedent("""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {name: prom}
    spec: {addresses: [198.18.0.164/30], autoAssign: false}
    """) + documents(echo_deployment("echo", NS), lb_service("echo", NS, "echo", {"portico.io/ip-pool": "prom"}),
                     json.dumps({"apiVersion": "portico.io/v1alpha1", "kind": "TrafficPolicy",
                                 "metadata": {"name": "echo", "namespace": NS},
                                 "spec": {"targetRefs": [{"kind": "Service", "name": "echo"}], "healthCheck": {
                                     "type": "HTTP", "interval": "500ms", "timeout": "250ms",
                                     "http": {"path": "/healthz"}}}}))


def api(path: str, **params: str) -> Any:
    answer = httpx.get(f"{prometheus.url()}/api/v1/{path}", params=params, timeout=5)
    answer.raise_for_status()
    return answer.json()["data"]


def alerts(name: str) -> list[dict[str, Any]]:
    return [a for a in api("alerts")["alerts"] if a["labels"].get("alertname") == name
            and a["labels"].get("service") == f"{NS}/echo"]


@pytest.fixture(scope="module")
def echo(lab: Lab) -> Iterator[None]:
    lab.kubectl("create", "namespace", NS)
    lab.kubectl("apply", "-f", "-", stdin=SETUP)
    try:
        yield
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=60s")
        lab.kubectl("delete", "ippool", "prom", "--ignore-not-found")


def test_prometheus_scrapes_every_agent_and_controller(lab: Lab) -> None:
    def targets() -> dict[str, list[str]] | None:
        up: dict[str, list[str]] = {}
        for target in api("targets")["activeTargets"]:
            if target["health"] == "up":
                up.setdefault(target["labels"]["job"], []).append(target["labels"]["pod"])
        agents = lab.get("pods", "-n", "portico-system", "-l", "app.kubernetes.io/name=portico-agent")["items"]
        controllers = lab.get("pods", "-n", "portico-system", "-l",
                              "app.kubernetes.io/name=portico-controller")["items"]
        wanted = {"portico-agent": sorted(p["metadata"]["name"] for p in agents),
                  "portico-controller": sorted(p["metadata"]["name"] for p in controllers)}
        return up if {job: sorted(pods) for job, pods in up.items()} == wanted else None
    up = wait_for(targets, 60, "every agent and controller scraped and up", interval=1)
    assert len(up["portico-agent"]) == 2 and len(up["portico-controller"]) >= 1
    leaders = api("query", query="sum(portico_controller_leader)")["result"]
    assert [float(r["value"][1]) for r in leaders] == [1.0]  # one leads, any other stands by
    rules = [r["name"] for group in api("rules")["groups"] for r in group["rules"]]
    assert {"PorticoVIPNoBackend", "PorticoPoolNearlyFull", "PorticoBGPSessionDown"} <= set(rules)


def test_a_vip_losing_its_last_healthy_backend_fires_the_alert_and_clears_when_it_is_well(lab: Lab,
                                                                                         echo: None) -> None:
    def backends() -> float | None:
        result = api("query", query=f'max(portico_frontend_backends{{service="{NS}/echo"}})')["result"]
        return float(result[0]["value"][1]) if result else None
    wait_for(lambda: backends() == 1, 90, "the echo VIP's backend scraped", interval=1)
    assert alerts("PorticoVIPNoBackend") == []
    rows = json.loads(lab.portico("status", "-n", NS, "--prometheus", prometheus.url(), "-o", "json").stdout)
    assert [(r["name"], type(r["packets_per_second"])) for r in rows["items"]] == [("echo", float)]

    pod = lab.get("pods", "-n", NS, "-l", "app=echo")["items"][0]["metadata"]["name"]
    signal_pod(lab, pod, signal.SIGUSR1, namespace=NS)  # sick: HTTP 503, still Ready for Kubernetes
    firing = wait_for(lambda: [a for a in alerts("PorticoVIPNoBackend") if a["state"] == "firing"], 90,
                      "PorticoVIPNoBackend firing", interval=1)
    assert firing[0]["labels"]["severity"] == "critical"
    assert firing[0]["annotations"]["summary"].startswith(f"{NS}/echo: no backend for 198.18.0.16")

    signal_pod(lab, pod, signal.SIGHUP, namespace=NS)  # well again
    wait_for(lambda: not alerts("PorticoVIPNoBackend"), 90, "the alert cleared", interval=1)
