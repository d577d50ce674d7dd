"""Ingresses of Portico's class served in the lab: the shared Ingress address (the chart's `portico-ingress`
Service, from the lab's L2-announced pool for it) in every Ingress's status.loadBalancer, host and path rules to two
Services' pods through HAProxy, TLS for two hosts chosen by SNI, the default backend for what no rule matches, and an
Event for what is not served as written. An Ingress of another class gets nothing."""

from __future__ import annotations

import functools
import ipaddress
import json
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portico.dev.addressing import INGRESS_VIPS_V4
from tests.e2e.conftest import Lab, wait_for
from tests.e2e.test_gateway import _app
from tests.e2e.test_gateway_api_lab import self_signed

NS = "ingress-e2e"
INGRESSES = textwrap.dedent(f"""
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {{name: site-a, namespace: {NS}}}
    spec:
      ingressClassName: portico
      tls: [{{hosts: [a.example], secretName: a-tls}}]
      rules:
        - host: a.example
          http:
            paths:
              - {{path: /a, pathType: Prefix, backend: {{service: {{name: web-a, port: {{number: 8080}}}}}}}}
              - {{path: /exact, pathType: Exact, backend: {{service: {{name: web-b, port: {{name: http}}}}}}}}
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {{name: site-b, namespace: {NS}}}
    spec:
      ingressClassName: portico
      tls: [{{hosts: [b.example], secretName: b-tls}}]
      defaultBackend: {{service: {{name: web-a, port: {{number: 8080}}}}}}
      rules:
        - host: b.example
          http:
            paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web-b, port: {{number: 8080}}}}}}}}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {{name: broken, namespace: {NS}}}
    spec:
      ingressClassName: portico
      rules:
        - host: broken.example
          http:
            paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: nobody, port: {{number: 80}}}}}}}}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    metadata: {{name: theirs, namespace: {NS}}}
    spec:
      ingressClassName: someone-else
      rules: [{{host: theirs.example, http: {{paths: [{{path: /, pathType: Prefix,
              backend: {{service: {{name: web-a, port: {{number: 8080}}}}}}}}]}}}}]
    """)


def pods(lab: Lab, app: str) -> set[str]:
    return {p["metadata"]["name"] for p in lab.get("pods", "-n", NS, "-l", f"app={app}")["items"]}


@pytest.fixture(scope="module")
def address(lab: Lab) -> Iterator[str]:
    """Yields the Ingress address once the Ingresses' statuses hold it."""
    lab.kubectl("create", "namespace", NS)
    with tempfile.TemporaryDirectory() as d:
        for host in ("a", "b"):
            crt, key = self_signed(Path(d), f"{host}.example")
            lab.kubectl("create", "secret", "tls", f"{host}-tls", "-n", NS, f"--cert={crt}", f"--key={key}")
    for app in ("web-a", "web-b"):
        lab.kubectl("apply", "-f", "-", stdin=_app(app, NS))
    lab.kubectl("apply", "-f", "-", stdin=INGRESSES)
    try:
        def published() -> str | None:
            lb = lab.get("ingress", "site-a", "-n", NS).get("status", {}).get("loadBalancer", {})
            return lb["ingress"][0]["ip"] if lb.get("ingress") else None
        ip = wait_for(published, 60, "the Ingress address in site-a's status")
        wait_for(lambda: all(pods(lab, a) for a in ("web-a", "web-b")), 60, "both apps' pods")
        yield ip
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=60s")


def answer(lab: Lab, *args: str) -> tuple[str, str | None]:
    """The HTTP status and the pod that answered (None when no pod did)."""
    r = lab.exec_in("client", "curl", "-s", "--max-time", "3", "-w", "\n%{http_code}", *args)
    body, _, code = r.stdout.rpartition("\n")
    return code, json.loads(body)["pod"] if body.startswith("{") else None


def test_every_ingress_of_ours_holds_the_shared_address(lab: Lab, address: str) -> None:
    svc = lab.get("service", "portico-ingress", "-n", "portico-system")
    assert svc["status"]["loadBalancer"]["ingress"][0]["ip"] == address
    assert ipaddress.ip_address(address) in INGRESS_VIPS_V4  # the lab's pool for it (portico.dev.install)
    def published(name: str) -> Any:
        return lab.get("ingress", name, "-n", NS).get("status", {}).get("loadBalancer", {}).get("ingress")
    for name in ("site-b", "broken"):
        assert wait_for(functools.partial(published, name), 30, f"{name}'s status") == [{"ip": address}]
    time.sleep(1)  # the controller has had its pass over `theirs` too
    assert not lab.get("ingress", "theirs", "-n", NS).get("status", {}).get("loadBalancer", {}).get("ingress")


def test_host_and_path_rules_reach_both_services_pods(lab: Lab, address: str) -> None:
    web_a, web_b = pods(lab, "web-a"), pods(lab, "web-b")

    def served(host: str, path: str) -> tuple[str, str | None] | None:
        got = answer(lab, "-H", f"Host: {host}", f"http://{address}{path}")
        return got if got[0] == "200" else None
    assert wait_for(lambda: served("a.example", "/a/page"), 30, "a.example/a")[1] in web_a
    assert answer(lab, "-H", "Host: a.example", f"http://{address}/exact")[1] in web_b  # a port by its name
    assert answer(lab, "-H", "Host: b.example", f"http://{address}/anything")[1] in web_b
    assert answer(lab, "-H", "Host: theirs.example", f"http://{address}/")[1] in web_a  # no rule: the default


def test_what_no_rule_matches_goes_to_the_default_backend(lab: Lab, address: str) -> None:
    web_a = pods(lab, "web-a")
    for host, path in (("a.example", "/exact/more"), ("a.example", "/ab"), ("elsewhere.example", "/")):
        code, pod = answer(lab, "-H", f"Host: {host}", f"http://{address}{path}")
        assert code == "200" and pod in web_a, (host, path, code)


def test_tls_picks_each_hosts_certificate_by_sni(lab: Lab, address: str) -> None:
    for host, app in (("a.example", "web-a"), ("b.example", "web-b")):
        path = "/a" if host == "a.example" else "/"
        r = lab.exec_in("client", "curl", "-s", "-k", "-v", "--max-time", "3", "--resolve", f"{host}:443:{address}",
                        f"https://{host}{path}")
        assert r.returncode == 0, r.stderr
        assert f"CN={host}" in r.stderr
        assert json.loads(r.stdout)["pod"] in pods(lab, app)


def test_a_backend_that_does_not_exist_is_answered_500_and_reported(lab: Lab, address: str) -> None:
    assert answer(lab, "-H", "Host: broken.example", f"http://{address}/")[0] == "500"

    def reported() -> list[str]:
        events = lab.get("events", "-n", NS, "--field-selector", "involvedObject.name=broken")["items"]
        return [e["message"] for e in events if e["reason"] == "NotServedAsWritten"]
    [message] = wait_for(reported, 30, "an Event on the broken Ingress")
    assert "spec.rules[0].http.paths[0].backend: Service ingress-e2e/nobody does not exist" in message


