"""A TrafficPolicy on a Service that an HTTPRoute sends to, in the lab: accepted there (the Service is a ClusterIP
one: an HTTP backend of a Portico Gateway), its cookie persistence pinning a client to a pod through the Gateway, its
health monitor taking a sick pod out of HAProxy's pool (and the pinned client moving to a healthy one), and the
request in the agents' access log."""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Iterator

import pytest

from portico.dev.addressing import host_netns
from tests.curl import curl_json
from tests.e2e.conftest import Lab, wait_for
from tests.e2e.test_gateway import _app, is_true
from tests.e2e.test_health import signal_pod

NS = "gwpolicy-e2e"
ADDRESS = "198.18.0.178"
SETUP = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: gwpolicy}}
    spec: {{addresses: [198.18.0.176/29], autoAssign: false}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: L2Advertisement
    metadata: {{name: gwpolicy}}
    spec: {{ipPools: [gwpolicy]}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: GatewayClass
    metadata: {{name: portico-policy}}
    spec: {{controllerName: portico.io/gateway-controller}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {{name: gw, namespace: {NS}}}
    spec:
      gatewayClassName: portico-policy
      addresses: [{{value: {ADDRESS}}}]
      listeners: [{{name: http, port: 80, protocol: HTTP}}]
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: shop, namespace: {NS}}}
    spec:
      parentRefs: [{{name: gw}}]
      hostnames: [shop.example]
      rules: [{{backendRefs: [{{name: web, port: 8080}}]}}]
    ---
    apiVersion: portico.io/v1alpha1
    kind: TrafficPolicy
    metadata: {{name: web, namespace: {NS}}}
    spec:
      targetRefs: [{{kind: Service, name: web}}]
      persistence: {{type: Cookie, sessionName: shop, idleTimeout: 30m}}
      healthCheck:
        type: HTTP
        http: {{path: /, expectedStatuses: ["200"]}}
        interval: 500ms
        timeout: 300ms
        unhealthyThreshold: 2
        healthyThreshold: 1
    """)


def curl(*args: str) -> tuple[int, dict[str, str], dict[str, str] | None]:
    return curl_json(host_netns("client"), f"http://{ADDRESS}/", "-H", "Host: shop.example", *args, timeout=2)


def served_pods(*args: str, n: int = 12) -> list[str]:
    out = []
    for _ in range(n):
        status, _, seen = curl(*args)
        assert status == 200 and seen is not None, status
        out.append(seen["pod"])
    return out


@pytest.fixture(scope="module")
def gateway(lab: Lab) -> Iterator[None]:
    lab.kubectl("create", "namespace", NS)
    lab.kubectl("apply", "-f", "-", stdin=_app("web", NS).replace("replicas: 1", "replicas: 3"))
    lab.kubectl("apply", "-f", "-", stdin=SETUP)
    try:
        wait_for(lambda: is_true(lab.get("gateway", "gw", "-n", NS), "Programmed"), 60, "the Gateway Programmed")
        wait_for(lambda: len(set(served_pods(n=9))) == 3 if curl()[0] == 200 else None, 90,
                 "the three pods served through the Gateway", interval=1)
        yield
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=60s")
        lab.kubectl("delete", "gatewayclass", "portico-policy", "--ignore-not-found")
        lab.kubectl("delete", "l2advertisement,ippool", "gwpolicy", "--ignore-not-found")


def test_a_policy_on_an_http_backend_is_accepted(lab: Lab, gateway: None) -> None:
    policy = lab.get("trafficpolicy", "web", "-n", NS)
    ancestor = policy["status"]["ancestors"][0]
    assert ancestor["ancestorRef"]["name"] == "web" and ancestor["conditions"][0]["status"] == "True", policy
    assert is_true(policy, "Accepted")


def test_a_cookie_pins_the_client_and_a_sick_pod_leaves_the_pool(lab: Lab, gateway: None) -> None:
    status, headers, seen = curl()
    assert status == 200 and seen is not None and headers["set-cookie"].startswith("shop="), headers
    cookie = headers["set-cookie"].split(";", 1)[0]
    pinned = seen["pod"]
    assert set(served_pods("-H", f"Cookie: {cookie}")) == {pinned}
    signal_pod(lab, pinned, signal.SIGUSR1, NS)  # sick: answers 503, which the monitor's expectedStatuses refuse
    try:
        sickened = time.monotonic()
        wait_for(lambda: (curl("-H", f"Cookie: {cookie}")[2] or {}).get("pod") not in (None, pinned), 10,
                 "the pinned client moved off the sick pod", interval=0.05)
        print(f"\nthe pinned client served by another pod {time.monotonic() - sickened:.2f} s after its pod fell sick")
        assert pinned not in served_pods(n=20)  # and nobody else is sent there
    finally:
        signal_pod(lab, pinned, signal.SIGHUP, NS)
    wait_for(lambda: pinned in served_pods(n=9), 30, "the pod back in the pool once healthy")


def test_requests_are_in_the_agents_access_log(lab: Lab, gateway: None) -> None:
    assert curl("-A", "portico-access-log-probe")[0] == 200
    agents = [p["metadata"]["name"] for p in lab.get("pods", "-n", "portico-system", "-l",
                                                    "app.kubernetes.io/name=portico-agent")["items"]]

    def logged() -> list[str]:
        logs = "".join(lab.portico("dev", "logs", f"pod/portico-system/{a}", check=False).stdout for a in agents)
        return [line for line in logs.splitlines() if f"{NS}_web_8080/s" in line and '"GET / HTTP/1.1"' in line]
    lines = wait_for(logged, 10, "an access log line for the request")
    assert " 200 " in lines[-1], lines[-1]
