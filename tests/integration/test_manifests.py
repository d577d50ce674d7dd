"""deploy/portico.yaml (the chart rendered) as a security review and an upgrade would take it, checked by the real
API server and kubectl."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from portico.api.crds import CRD_DIR
from portico.controller.annotations import LOAD_BALANCER_CLASS
from portico.dev import gateway_api
from portico.dev.controlplane import ControlPlaneConfig
from portico.dev.helm import CHART, MANIFESTS, NAMESPACE, RELEASE, render_manifests, run_helm
from portico.dev.shell import LabError
from tests.security_doc import Grants, documented_grants


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


# --- Ingress: the IngressClass, the shared address's Service, and the RBAC the controller and agents read it with ---

INGRESS_CONTROLLER = "portico.io/ingress-controller"  # portico.l7.ingress.INGRESS_CONTROLLER


def rendered(*values: str) -> list[dict[str, Any]]:
    """The chart's objects with these `--set` arguments (hooks included)."""
    out = run_helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *values)
    return [d for d in yaml.safe_load_all(out) if d]


def deployed() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def test_the_ingress_class_and_its_service_render_by_default() -> None:
    docs = deployed()
    account = named(docs, "ServiceAccount", "portico-controller")
    assert account is not None
    standard = account["metadata"]["labels"]  # the chart's standard labels
    ingress_class = named(docs, "IngressClass", "portico")
    assert ingress_class is not None
    assert ingress_class["apiVersion"] == "networking.k8s.io/v1"
    assert ingress_class["spec"] == {"controller": INGRESS_CONTROLLER}
    assert "annotations" not in ingress_class["metadata"]  # not the cluster's default class unless asked
    svc = named(docs, "Service", "portico-ingress")
    assert svc is not None
    meta = svc["metadata"]
    assert meta["namespace"] == NAMESPACE  # where the controller and agents look for it
    assert meta["labels"] == {**standard, "app.kubernetes.io/component": "ingress"}
    assert "annotations" not in meta
    assert svc["spec"] == {  # no selector (HAProxy on the nodes serves it), externalTrafficPolicy left default
        "type": "LoadBalancer", "loadBalancerClass": LOAD_BALANCER_CLASS, "allocateLoadBalancerNodePorts": False,
        "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
                  {"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP"}]}


def test_the_ingress_values_name_the_class_make_it_the_default_and_annotate_the_service() -> None:
    annotations = {"portico.io/load-balancer-ips": "192.0.2.250", "portico.io/ip-pool": "lan"}
    docs = rendered("--set", "ingress.className=web", "--set", "ingress.defaultClass=true",
                    "--set-json", f"ingress.service.annotations={json.dumps(annotations)}")
    assert named(docs, "IngressClass", "portico") is None
    ingress_class = named(docs, "IngressClass", "web")
    assert ingress_class is not None and ingress_class["spec"] == {"controller": INGRESS_CONTROLLER}
    assert ingress_class["metadata"]["annotations"] == {"ingressclass.kubernetes.io/is-default-class": "true"}
    svc = named(docs, "Service", "portico-ingress")  # its name is fixed: the controller looks it up
    assert svc is not None and svc["metadata"]["annotations"] == annotations


def test_ingress_disabled_renders_neither_class_nor_service_but_keeps_the_rbac() -> None:
    docs = rendered("--set", "ingress.enabled=false")
    assert not [d for d in docs if d["kind"] == "IngressClass"]
    assert named(docs, "Service", "portico-ingress") is None
    assert not [d for d in docs if d["kind"] == "Service"]  # the chart has no other Service
    # The components watch Ingresses whatever the values (their informers are not optional): the grants stay.
    for role in ("portico-controller", "portico-agent"):
        assert networking_rules(docs, role) == networking_rules(deployed(), role), role


def test_the_ingress_values_are_checked_by_the_schema() -> None:
    for bad, path in ((("--set", "ingress.className=Not_A_Name"), "/ingress/className"),
                      (("--set", "ingress.enable=true"), "enable"),
                      (("--set", "ingress.service.annotations.portico\\.io/ip-pool=1"), "/ingress/service")):
        with pytest.raises(LabError, match=re.escape(path)):
            rendered(*bad)


def networking_rules(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    role = named(docs, "ClusterRole", name)
    assert role is not None, name
    return [r for r in role["rules"] if "networking.k8s.io" in r["apiGroups"]]


def test_the_controller_reads_ingresses_and_patches_only_their_status() -> None:
    """Least privilege: the controller writes Ingresses' status.loadBalancer with a merge patch (no update), and
    never an Ingress itself."""
    assert networking_rules(deployed(), "portico-controller") == [
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses/status"], "verbs": ["patch"]}]


def test_the_agents_only_read_ingresses() -> None:
    assert networking_rules(deployed(), "portico-agent") == [
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingressclasses"],
         "verbs": ["get", "list", "watch"]}]


def role_grants(role: dict[str, Any]) -> Grants:
    """A Role's or ClusterRole's rules, named as `kubectl auth can-i --list` names them."""
    out: Grants = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                base, _, sub = resource.partition("/")
                full = f"{base}.{group}" if group else base
                full += f"/{sub}" if sub else ""
                for names in rule.get("resourceNames") or [None]:
                    key = f"{full} ({names})" if names else full
                    out.setdefault(key, set()).update(rule["verbs"])
    return out


def test_the_rendered_roles_grant_exactly_the_documented_permissions() -> None:
    """Without a lab: the chart's roles are the allow-list of docs/security.md (tests/e2e/test_rbac.py checks the
    same against the lab's API server)."""
    docs, allowed = deployed(), documented_grants()
    for component in ("agent", "controller"):
        cluster = named(docs, "ClusterRole", f"portico-{component}")
        local = named(docs, "Role", f"portico-{component}")
        assert cluster is not None and local is not None, component
        assert role_grants(cluster) == allowed[(component, "cluster")], component
        assert role_grants(local) == allowed.get((component, NAMESPACE), {}), component


@pytest.fixture
def namespace(controlplane: ControlPlaneConfig) -> Iterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    out = kubectl(controlplane, "create", "namespace", ns)
    assert out.returncode == 0, out.stderr
    yield ns
    kubectl(controlplane, "delete", "namespace", ns, "--wait=false")


def test_the_api_server_accepts_the_ingress_class_and_service(controlplane: ControlPlaneConfig,
                                                              namespace: str) -> None:
    docs = deployed()
    ingress_class, svc = named(docs, "IngressClass", "portico"), named(docs, "Service", "portico-ingress")
    assert ingress_class is not None and svc is not None
    svc = copy.deepcopy(svc)
    svc["metadata"]["namespace"] = namespace
    stored = {}
    for obj in (ingress_class, svc):
        out = kubectl(controlplane, "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(obj))
        assert out.returncode == 0, out.stderr
        stored[obj["kind"]] = json.loads(out.stdout)
    assert stored["Service"]["spec"]["externalTrafficPolicy"] == "Cluster"  # the API server's default
    assert "selector" not in stored["Service"]["spec"]
    assert stored["IngressClass"]["spec"]["controller"] == INGRESS_CONTROLLER


def test_monitoring_renders_service_monitors_the_alert_rules_and_grafana_only_when_asked() -> None:
    assert not [d for d in deployed() if d["apiVersion"].startswith("monitoring.coreos.com/")]
    docs = rendered(*(f"--set=monitoring.{value}" for value in (
        "serviceMonitor.enabled=true", "prometheusRule.enabled=true", "grafanaDashboard.enabled=true",
        "serviceMonitor.labels.release=prom")))
    for name, port in (("portico-agent", "metrics"), ("portico-controller", "probes")):
        monitor = named(docs, "ServiceMonitor", name)
        assert monitor is not None and monitor["metadata"]["labels"]["release"] == "prom"
        assert monitor["spec"]["endpoints"][0]["port"] == port
        svc = named(docs, "Service", f"{name}-metrics")
        workload_kind = "DaemonSet" if name == "portico-agent" else "Deployment"
        pods = named(docs, workload_kind, name)
        assert svc is not None and pods is not None
        assert svc["spec"]["selector"].items() <= pods["spec"]["template"]["metadata"]["labels"].items()
        container_ports = {p["name"] for c in pods["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert port in container_ports
    rule = named(docs, "PrometheusRule", "portico")
    assert rule is not None
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    grafana = named(docs, "ConfigMap", "portico-grafana-dashboard")
    assert grafana is not None and json.loads(grafana["data"]["portico.json"]) == json.loads(
        (CHART / "files" / "grafana-dashboard.json").read_text())
