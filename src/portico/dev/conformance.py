"""The upstream Gateway API conformance suite (hack/gateway-api/build.sh, pinned) run against a running lab, from
the lab's client namespace as a user's client would reach the Gateways: the GATEWAY-HTTP profile with exactly the
features Portico's GatewayClass claims (portico.l7.features), its ConformanceReport written where asked."""

from __future__ import annotations

import subprocess
import textwrap
from importlib import metadata
from pathlib import Path

from portico.api.gateway import CONTROLLER_NAME
from portico.dev import netns
from portico.dev.controlplane import REPO_ROOT
from portico.dev.gateway_api import build, version
from portico.dev.shell import LabError, run
from portico.dev.state import LabState
from portico.l7.features import SUPPORTED_FEATURES

DOCS = REPO_ROOT / "docs" / "conformance"
GATEWAY_CLASS = "portico"
PROFILE = "GATEWAY-HTTP"
TIMEOUT = "1h"  # upstream's advice for a full run
# What the suite needs besides its own manifests: Portico's GatewayClass, and addresses for its Gateways — a pool
# on the lab LAN, announced by ARP, that only the suite's Gateways' address Services draw from.
SETUP = textwrap.dedent(f"""
    apiVersion: gateway.networking.k8s.io/v1
    kind: GatewayClass
    metadata: {{name: {GATEWAY_CLASS}}}
    spec: {{controllerName: {CONTROLLER_NAME}}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: gateway-conformance}}
    spec:
      addresses: [198.18.0.224/28]
      namespaceSelector: {{matchExpressions: [{{key: gateway-conformance, operator: Exists}}]}}
      serviceSelector: {{matchExpressions: [{{key: gateway.networking.k8s.io/gateway-name, operator: Exists}}]}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: L2Advertisement
    metadata: {{name: gateway-conformance}}
    spec: {{ipPools: [gateway-conformance]}}
    """)


def report_name() -> str:
    return f"{version()}-portico-{metadata.version('portico')}-report.yaml"


def suite_argv(report: Path, run_test: str | None) -> list[str]:
    version = metadata.version("portico")
    return [str(build() / "conformance.test"), "-test.run", "TestConformance$", f"-test.timeout={TIMEOUT}",
            "-test.v", f"-gateway-class={GATEWAY_CLASS}", f"-conformance-profiles={PROFILE}",
            f"-supported-features={','.join(SUPPORTED_FEATURES)}", f"-report-output={report}",
            "-organization=portico", "-project=portico", "-url=https://portico.invalid/", f"-version={version}",
            "-contact=docs/gateway-api.md", "-cleanup-base-resources=true",
            *([f"-run-test={run_test}"] if run_test else [])]


def run_suite(state_dir: Path, report: Path, *, run_test: str | None = None) -> int:
    """The suite's exit code; its output goes to the terminal, the report to `report`."""
    state = LabState.load(state_dir)
    kubectl = ["kubectl", f"--kubeconfig={state.kubeconfig}"]
    run([*kubectl, "apply", "-f", "-"], input=SETUP)
    report.parent.mkdir(parents=True, exist_ok=True)
    argv = netns.exec_argv(state.topology.host("client").netns, ["env", f"KUBECONFIG={state.kubeconfig}",
                                                                 *suite_argv(report.resolve(), run_test)])
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError as e:
        raise LabError(f"cannot run the conformance suite: {e}") from e
    finally:
        run([*kubectl, "delete", "--ignore-not-found", "--wait=false", "-f", "-"], input=SETUP, check=False)
