"""Gateways served in the lab: Portico's GatewayClass accepted with its features, a Gateway given an address from
the pools (its Service beside it) and announced, HTTPRoutes routing by host and path to pods through HAProxy on
the announcing node, TLS terminated with a Secret's certificate, and every status the spec defines."""

from __future__ import annotations

import json
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portico.l7.features import SUPPORTED_FEATURES
from tests.e2e.conftest import Lab, wait_for
from tests.e2e.test_gateway_api_lab import self_signed

NS = "gw-e2e"
APPS = ("web-a", "web-b")
ADDRESS = "198.18.0.210"  # asked for in spec.addresses, from a pool on the lab LAN announced by L2
POOL = textwrap.dedent("""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {name: gw-e2e}
    spec: {addresses: [198.18.0.208/29], autoAssign: false}
    ---
    apiVersion: portico.io/v1alpha1
    kind: L2Advertisement
    metadata: {name: gw-e2e}
    spec: {ipPools: [gw-e2e]}
    """)


def _app(name: str, namespace: str = NS) -> str:
    return textwrap.dedent(f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          replicas: 1
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec:
              containers:
                - {{name: echo, image: portico.dev/echo, ports: [{{name: http, containerPort: 8080}}]}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: {namespace}}}
        spec:
          selector: {{app: {name}}}
          ports: [{{name: http, port: 8080, targetPort: http}}]
        """)


GATEWAY = textwrap.dedent(f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: GatewayClass
    metadata: {{name: portico}}
    spec: {{controllerName: portico.io/gateway-controller}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {{name: gw, namespace: {NS}}}
    spec:
      gatewayClassName: portico
      addresses: [{{value: {ADDRESS}}}]
      listeners:
        - {{name: http, port: 80, protocol: HTTP}}
        - name: https
          port: 443
          protocol: HTTPS
          hostname: a.example
          tls: {{certificateRefs: [{{name: a-example-tls}}]}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: split, namespace: {NS}}}
    spec:
      parentRefs: [{{name: gw}}]
      hostnames: [a.example]
      rules:
        - matches: [{{path: {{type: PathPrefix, value: /a}}}}]
          backendRefs: [{{name: web-a, port: 8080}}]
        - matches: [{{path: {{type: PathPrefix, value: /b}}}}]
          backendRefs: [{{name: web-b, port: 8080}}]
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: missing-backend, namespace: {NS}}}
    spec:
      parentRefs: [{{name: gw, sectionName: http}}]
      hostnames: [broken.example]
      rules:
        - backendRefs: [{{name: nobody, port: 8080}}]
    """)


def condition(obj: dict[str, Any], type: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type), None)


def is_true(obj: dict[str, Any], type: str) -> bool:
    c = condition(obj, type)
    return c is not None and c["status"] == "True"


@pytest.fixture(scope="module")
def gateway(lab: Lab) -> Iterator[str]:
    """Yields the Gateway's address once it is Programmed."""
    lab.kubectl("create", "namespace", NS)
    with tempfile.TemporaryDirectory() as d:
        crt, key = self_signed(Path(d), "a.example")
        lab.kubectl("create", "secret", "tls", "a-example-tls", "-n", NS, f"--cert={crt}", f"--key={key}")
    for app in APPS:
        lab.kubectl("apply", "-f", "-", stdin=_app(app))
    lab.kubectl("apply", "-f", "-", stdin=POOL)
    lab.kubectl("apply", "-f", "-", stdin=GATEWAY)
    try:
        gw = wait_for(lambda: (g := lab.get("gateway", "gw", "-n", NS)) and is_true(g, "Programmed") and g, 60,
                      "the Gateway Programmed")
        wait_for(lambda: all(lab.get("endpointslices", "-n", NS, "-l", f"kubernetes.io/service-name={app}")["items"]
                             for app in APPS), 60, "endpoints of both apps")
        yield gw["status"]["addresses"][0]["value"]
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=60s")
        lab.kubectl("delete", "gatewayclass", "portico", "--ignore-not-found")
        lab.kubectl("delete", "l2advertisement,ippool", "gw-e2e", "--ignore-not-found")


def curl(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.exec_in("client", "curl", "-s", "--max-time", "3", *args)


def test_the_class_is_accepted_with_its_features(lab: Lab, gateway: str) -> None:
    cls = lab.get("gatewayclass", "portico")
    assert is_true(cls, "Accepted")
    assert {f["name"] for f in cls["status"]["supportedFeatures"]} == set(SUPPORTED_FEATURES)


def test_the_gateway_holds_its_services_address_with_listener_statuses(lab: Lab, gateway: str) -> None:
    assert gateway == ADDRESS  # spec.addresses honoured
    svc = lab.get("service", "portico-gw-gw", "-n", NS)
    assert svc["status"]["loadBalancer"]["ingress"][0]["ip"] == gateway
    assert svc["metadata"]["ownerReferences"][0]["kind"] == "Gateway"
    gw = lab.get("gateway", "gw", "-n", NS)
    assert is_true(gw, "Accepted")
    generation = gw["metadata"]["generation"]
    assert all(c["observedGeneration"] == generation for c in gw["status"]["conditions"])
    listeners = {li["name"]: li for li in gw["status"]["listeners"]}
    assert {n: li["attachedRoutes"] for n, li in listeners.items()} == {"http": 2, "https": 1}
    for li in listeners.values():
        assert {c["type"]: c["status"] for c in li["conditions"]} == {
            "Accepted": "True", "ResolvedRefs": "True", "Conflicted": "False", "Programmed": "True"}


def test_routes_send_by_host_and_path_to_the_pods(lab: Lab, gateway: str) -> None:
    pods = {app: {p["metadata"]["name"] for p in lab.get("pods", "-n", NS, "-l", f"app={app}")["items"]}
            for app in APPS}
    for app, path in (("web-a", "/a"), ("web-b", "/b/x")):
        def answered(path: str = path) -> subprocess.CompletedProcess[str] | None:
            r = curl(lab, "-H", "Host: a.example", f"http://{gateway}{path}")
            return r if r.returncode == 0 and r.stdout.startswith("{") else None
        answer = wait_for(answered, 30, f"{path} answered")
        assert json.loads(answer.stdout)["pod"] in pods[app]
    status = curl(lab, "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: a.example", f"http://{gateway}/c")
    assert status.stdout == "404"
    status = curl(lab, "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: broken.example", f"http://{gateway}/")
    assert status.stdout == "500"  # the spec's answer for a backendRef that does not resolve


def test_tls_is_terminated_with_the_secrets_certificate(lab: Lab, gateway: str) -> None:
    answer = curl(lab, "-k", "-v", "--resolve", f"a.example:443:{gateway}", "https://a.example/a")
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["pod"].startswith("web-a")
    assert "CN=a.example" in answer.stderr


def test_route_statuses_say_what_resolved(lab: Lab, gateway: str) -> None:
    def parents(route: str) -> list[dict[str, Any]]:
        return lab.get("httproute", route, "-n", NS).get("status", {}).get("parents", [])

    [ok] = parents("split")
    assert ok["controllerName"] == "portico.io/gateway-controller"
    assert {c["type"]: c["status"] for c in ok["conditions"]} == {"Accepted": "True", "ResolvedRefs": "True"}
    [broken] = wait_for(lambda: parents("missing-backend"), 10, "status of the broken route")
    resolved = next(c for c in broken["conditions"] if c["type"] == "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert "nobody" in resolved["message"]


def test_a_gateway_of_another_class_gets_nothing_from_us(lab: Lab, gateway: str) -> None:
    lab.kubectl("apply", "-f", "-", stdin=textwrap.dedent(f"""
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {{name: theirs, namespace: {NS}}}
        spec:
          gatewayClassName: someone-else
          listeners: [{{name: http, port: 80, protocol: HTTP}}]
        """))
    time.sleep(2)  # our controller has had a pass at it (its passes follow every change within 0.1 s)
    gw = lab.get("gateway", "theirs", "-n", NS)
    assert not gw.get("status", {}).get("addresses")
    accepted = condition(gw, "Accepted")
    assert accepted is not None and accepted["status"] == "Unknown"  # the CRD's default: nobody has answered
    assert lab.kubectl("get", "service", "-n", NS, "portico-gw-theirs", "--ignore-not-found").strip() == ""
