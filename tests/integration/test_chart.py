"""The Helm chart (charts/portico) with the pinned helm: lint, its schema, deploy/ as its rendering, and its
manifests against the real API server (`helm template | kubectl apply --dry-run=server`)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from portico.dev.controlplane import ControlPlaneConfig
from portico.dev.helm import CHART, MANIFESTS, helm_binary, render_manifests
from tests.integration.test_manifests import kubectl


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120, check=False)


def test_deploy_is_the_chart_rendered() -> None:
    """One source: deploy/portico.yaml is `portico gen manifests` of the chart, not a copy that drifts."""
    assert MANIFESTS.read_text() == render_manifests(), "deploy/portico.yaml is stale: run `portico gen manifests`"


def test_the_chart_lints_and_its_schema_names_a_bad_value() -> None:
    out = helm("lint", "--strict", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    bad = helm("lint", str(CHART), "--set", "agent.metricsPort=70000")
    assert bad.returncode != 0 and "/agent/metricsPort" in bad.stdout + bad.stderr, bad.stdout + bad.stderr
    typo = helm("lint", str(CHART), "--set", "controller.replica=3")  # not a value the chart has
    assert typo.returncode != 0 and "replica" in typo.stdout + typo.stderr, typo.stdout + typo.stderr


@pytest.fixture
def namespace(controlplane: ControlPlaneConfig) -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    assert kubectl(controlplane, "create", "namespace", ns).returncode == 0
    yield ns
    kubectl(controlplane, "delete", "namespace", ns, "--wait=false")


def rendered(namespace: str, *values: str) -> str:
    out = helm("template", "portico", str(CHART), "--namespace", namespace, *values)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_rendered_chart_is_accepted_by_the_api_server(controlplane: ControlPlaneConfig, portico_crds: None,
                                                          namespace: str) -> None:
    """Every object, as the API server would store it (schemas, CEL, RBAC escalation checks), with pools and an
    announcement from the values; and a pool the CRD refuses is refused naming the field."""
    pools = ["--set", "ipPools[0].name=lan", "--set-json", 'ipPools[0].spec={"addresses": ["192.0.2.240/28"]}',
             "--set", "l2Advertisements[0].name=lan", "--set-json", 'l2Advertisements[0].spec={"ipPools": ["lan"]}']
    out = kubectl(controlplane, "apply", "--dry-run=server", "-f", "-", stdin=rendered(namespace, *pools))
    assert out.returncode == 0, out.stderr
    assert "daemonset.apps/portico-agent created (server dry run)" in out.stdout, out.stdout
    assert "ippool.portico.io/lan created (server dry run)" in out.stdout, out.stdout
    bad = ["--set", "ipPools[0].name=lan", "--set-json", 'ipPools[0].spec={"addresses": ["not-an-address"]}']
    out = kubectl(controlplane, "apply", "--dry-run=server", "-f", "-", stdin=rendered(namespace, *bad))
    assert out.returncode != 0 and "spec.addresses" in out.stderr, out.stderr
