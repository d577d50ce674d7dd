"""deploy/portico.yaml (the chart rendered) as a security review and an upgrade would take it, checked by the real
API server and kubectl."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from portico.api.crds import CRD_DIR
from portico.dev import gateway_api
from portico.dev.controlplane import ControlPlaneConfig
from portico.dev.helm import MANIFESTS, render_manifests


def kubectl(config: ControlPlaneConfig, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(config.admin_kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_deploy_is_the_chart_rendered() -> None:
    """One source: deploy/portico.yaml is `portico gen manifests` of the chart, not a copy that drifts. (The chart
    itself — lint, schema, dry run, install, upgrade, uninstall — is tests/e2e/test_chart.py.)"""
    assert MANIFESTS.read_text() == render_manifests(), "deploy/portico.yaml is stale: run `portico gen manifests`"


def test_the_vendored_gateway_api_crds_are_the_pinned_modules() -> None:
    """charts/portico/crds/gateway-api is a copy of config/crd/standard of the pinned sigs.k8s.io/gateway-api."""
    vendored = {p.name: p.read_text() for p in sorted(gateway_api.VENDORED_CRDS.glob("*.yaml"))}
    assert vendored == gateway_api.upstream_crds(), "run `portico gen crds` after changing hack/gateway-api"


def workload(kind: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(MANIFESTS.read_text()))
    found: dict[str, Any] = next(d for d in docs if d and d["kind"] == kind)
    return found


@pytest.fixture
def restricted(controlplane: ControlPlaneConfig) -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    out = kubectl(controlplane, "create", "namespace", ns)
    assert out.returncode == 0, out.stderr
    kubectl(controlplane, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    yield ns
    kubectl(controlplane, "delete", "namespace", ns, "--wait=false")


def test_the_controller_passes_the_restricted_pod_security_standard(controlplane: ControlPlaneConfig,
                                                                   restricted: str) -> None:
    """Pod Security Admission (in the API server) enforces 'restricted': non-root, no capabilities, seccomp, no
    privilege escalation. The controller's pod, as its Deployment would create it, must be admitted."""
    spec = copy.deepcopy(workload("Deployment")["spec"]["template"]["spec"])
    spec.pop("serviceAccountName")  # not this namespace's; what is checked here is the security context
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "controller", "namespace": restricted},
           "spec": spec}
    out = kubectl(controlplane, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert out.returncode == 0, out.stderr
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # ... and a pod without those settings is refused, so the check above checks something.
    del container["securityContext"]
    out = kubectl(controlplane, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert out.returncode != 0 and "violates PodSecurity" in out.stderr, out.stderr


def test_the_agent_gets_exactly_net_admin_and_net_raw() -> None:
    spec = workload("DaemonSet")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"]}
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["hostNetwork"] is True and spec["priorityClassName"] == "system-node-critical"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "memory" in container["resources"]["limits"] and "cpu" not in container["resources"]["limits"]


def test_both_components_have_probes_and_resources() -> None:
    for kind in ("Deployment", "DaemonSet"):
        container = workload(kind)["spec"]["template"]["spec"]["containers"][0]
        assert {"livenessProbe", "readinessProbe", "resources"} <= container.keys(), kind
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}, kind


def test_crds_install_with_plain_kubectl_apply_and_update_in_place(controlplane: ControlPlaneConfig,
                                                                   portico_crds: None) -> None:
    """`kubectl apply -f charts/portico/crds` (the step before `helm upgrade`) over CRDs already there, and over
    an older version of one: the schema is updated in place and existing objects stay."""
    crd_path = CRD_DIR / "l2advertisements.yaml"
    crd = yaml.safe_load(crd_path.read_text())
    older = copy.deepcopy(crd)
    properties = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    removed = next(iter(sorted(properties)))
    del properties[removed]  # an earlier release without this field
    out = kubectl(controlplane, "apply", "-f", "-", stdin=json.dumps(older))
    assert out.returncode == 0, out.stderr
    name = f"t-{uuid.uuid4().hex[:8]}"
    obj = {"apiVersion": "portico.io/v1alpha1", "kind": "L2Advertisement", "metadata": {"name": name}, "spec": {}}
    assert kubectl(controlplane, "apply", "-f", "-", stdin=json.dumps(obj)).returncode == 0
    try:
        out = kubectl(controlplane, "apply", "-f", str(CRD_DIR))
        assert out.returncode == 0, out.stderr
        assert "l2advertisements.portico.io configured" in out.stdout, out.stdout
        got = json.loads(kubectl(controlplane, "get", "crd", "l2advertisements.portico.io", "-o", "json").stdout)
        assert removed in got["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        assert kubectl(controlplane, "get", "l2advertisement", name).returncode == 0  # still there
        again = kubectl(controlplane, "apply", "-f", str(CRD_DIR))
        assert again.returncode == 0 and "configured" not in again.stdout, again.stdout  # nothing left to change
    finally:
        kubectl(controlplane, "delete", "l2advertisement", name)
