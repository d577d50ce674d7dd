"""The controller as deployed from deploy/ into the lab: RBAC, leader election, addresses."""

from __future__ import annotations

import textwrap
from typing import Any

from tests.e2e.conftest import Lab, wait_for

POOL = textwrap.dedent("""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {name: e2e}
    spec: {addresses: [198.18.100.0/28], avoidBuggyIPs: true}
""")


def service(name: str) -> str:
    return textwrap.dedent(f"""
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: default}}
        spec:
          type: LoadBalancer
          selector: {{app: {name}}}
          ports: [{{port: 80, protocol: TCP}}]
    """)


def external_ip(lab: Lab, name: str) -> str | None:
    ingress = lab.get("service", name).get("status", {}).get("loadBalancer", {}).get("ingress") or []
    return ingress[0]["ip"] if ingress else None


def leader(lab: Lab) -> str:
    """The Lease's holder; "" while nobody holds it (a leader that stops releases it)."""
    lease: dict[str, Any] = lab.get("lease", "-n", "portico-system", "portico-controller")
    return str(lease["spec"].get("holderIdentity") or "")


def test_controller_from_manifests_allocates_and_fails_over(lab: Lab) -> None:
    pods = lab.get("pods", "-n", "portico-system", "-l", "app.kubernetes.io/name=portico-controller")["items"]
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    lab.kubectl("apply", "-f", "-", stdin=POOL)
    try:
        lab.kubectl("apply", "-f", "-", stdin=service("first"))
        assert wait_for(lambda: external_ip(lab, "first"), 20, "first gets an IP") == "198.18.100.1"
        assert "198-18-100-1" in lab.kubectl("get", "ipallocations", "-o", "name")

        old = wait_for(lambda: leader(lab), 10, "a leader")
        lab.kubectl("delete", "pod", "-n", "portico-system", old, "--wait=false")
        new = wait_for(lambda: (holder := leader(lab)) != old and holder, 40, "another replica to lead")
        assert new != old
        lab.kubectl("apply", "-f", "-", stdin=service("second"))
        assert wait_for(lambda: external_ip(lab, "second"), 30, "second gets an IP") == "198.18.100.2"
        assert external_ip(lab, "first") == "198.18.100.1"  # untouched by the failover
    finally:  # a failure here must not leave the pool to hand out addresses to later modules
        lab.kubectl("delete", "service", "first", "second", "--ignore-not-found")
        wait_for(lambda: "198-18-100" not in lab.kubectl("get", "ipallocations", "-o", "name"), 20,
                 "addresses released")
        lab.kubectl("delete", "ippool", "e2e")
