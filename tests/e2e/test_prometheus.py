"""The lab's real Prometheus: it finds every agent and the controllers through the API server and scrapes them,
and the chart's alert rules fire — a VIP whose last backend goes raises PorticoVIPNoBackend, and it clears when
one comes back."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest

from portico.dev import prometheus
from tests.e2e.conftest import Lab, wait_for

NS = "prom-e2e"
SETUP = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: prom}}
    spec: {{addresses: [198.18.0.164/30], autoAssign: false}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: echo, namespace: {NS}}}
    spec:
      replicas: 1
      selector: {{matchLabels: {{app: echo}}}}
      template:
        metadata: {{labels: {{app: echo}}}}
        spec:
          containers:
            - {{name: echo, image: portico.dev/echo, ports: [{{name: http, containerPort: 8080}}]}}
    ---
    apiVersion: v1
    kind: Service
    metadata:
      name: echo
      namespace: {NS}
      annotations: {{portico.io/ip-pool: prom}}
    spec:
      type: LoadBalancer
      loadBalancerClass: portico.io/lb
      selector: {{app: echo}}
      ports: [{{name: http, port: 80, targetPort: 8080}}]
    """)


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


def test_a_vip_losing_its_last_backend_fires_the_alert_and_clears_when_one_returns(lab: Lab, echo: None) -> None:
    def backends() -> float | None:
        result = api("query", query=f'max(portico_frontend_backends{{service="{NS}/echo"}})')["result"]
        return float(result[0]["value"][1]) if result else None
    wait_for(lambda: backends() == 1, 90, "the echo VIP's backend scraped", interval=1)
    assert alerts("PorticoVIPNoBackend") == []

    lab.kubectl("scale", "deployment", "echo", "-n", NS, "--replicas=0")
    firing = wait_for(lambda: [a for a in alerts("PorticoVIPNoBackend") if a["state"] == "firing"], 90,
                      "PorticoVIPNoBackend firing", interval=1)
    assert firing[0]["labels"]["severity"] == "critical"
    assert firing[0]["annotations"]["summary"].startswith(f"{NS}/echo: no backend for 198.18.0.16")

    lab.kubectl("scale", "deployment", "echo", "-n", NS, "--replicas=1")
    wait_for(lambda: not alerts("PorticoVIPNoBackend"), 90, "the alert cleared", interval=1)
