"""The lab's Prometheus (upstream's, built from its pinned Go module by hack/prometheus/build.sh: Debian's has no
Kubernetes service discovery), as a cluster's would run: on node-1's network (a hostNetwork pod's
place: it reaches every node's agent and every pod), finding its targets through the lab API server (Kubernetes
service discovery, as a ServiceAccount with read-only RBAC), and loading the chart's alert rules as they ship
(charts/portico/files/prometheus-rules.yaml). Its HTTP API is on node-1's lab address, port 9090."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx2 as httpx
import yaml

from portico.dev.addressing import host_netns, node_addressing
from portico.dev.controlplane import REPO_ROOT
from portico.dev.daemons import Daemons
from portico.dev.helm import CHART
from portico.dev.shell import LabError, build_output

PROMETHEUS = "prometheus"
NAMESPACE = "portico-monitoring"
CONFIG, TOKEN, DATA = "prometheus.yml", "prometheus.token", "prometheus-data"
PORT = 9090
NODE = 1  # the node whose network it runs on
RULES = CHART / "files" / "prometheus-rules.yaml"
BUILD_SCRIPT = REPO_ROOT / "hack" / "prometheus" / "build.sh"
INTERVAL = "5s"  # scrape and rule evaluation: a lab's tests should not wait on minutes
JOBS = {"portico-agent": "metrics", "portico-controller": "probes"}  # app.kubernetes.io/name -> its port's name

RBAC = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: prometheus, namespace: {NAMESPACE}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: lab-prometheus}}
rules:
  - apiGroups: [""]
    resources: [pods, nodes, services, endpoints]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: lab-prometheus}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: lab-prometheus}}
subjects: [{{kind: ServiceAccount, name: prometheus, namespace: {NAMESPACE}}}]
"""


def url() -> str:
    return f"http://{node_addressing(NODE).lan_v4}:{PORT}"


def config(state_dir: Path, api_url: str, ca: Path, namespace: str) -> str:
    """Scrape jobs: every pod of the agent's and the controller's, by the port their chart names."""
    def job(name: str, port: str) -> dict[str, object]:
        return {
            "job_name": name,
            "kubernetes_sd_configs": [{"role": "pod", "api_server": api_url, "namespaces": {"names": [namespace]},
                                       "tls_config": {"ca_file": str(ca)},
                                       "authorization": {"credentials_file": str(state_dir / TOKEN)}}],
            "relabel_configs": [
                {"source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name",
                                   "__meta_kubernetes_pod_container_port_name"],
                 "regex": f"{name};{port}", "action": "keep"},
                {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ],
        }
    return yaml.safe_dump({
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": [str(RULES)],
        "scrape_configs": [job(name, port) for name, port in JOBS.items()],
    }, sort_keys=False)


def start(state_dir: Path, daemons: Daemons, *, kubeconfig: Path, api_url: str, ca: Path, namespace: str,
          deadline: float) -> None:
    """Its identity (a ServiceAccount's token), its configuration, then the daemon, until it answers ready."""
    if daemons.alive(PROMETHEUS):
        return
    kubectl = ["kubectl", "--kubeconfig", str(kubeconfig)]
    subprocess.run([*kubectl, "apply", "-f", "-"], input=RBAC, text=True, capture_output=True, check=True)
    token = subprocess.run([*kubectl, "create", "token", "prometheus", "-n", NAMESPACE, "--duration", "48h"],
                           text=True, capture_output=True, check=True).stdout.strip()
    (state_dir / TOKEN).touch(mode=0o600)
    (state_dir / TOKEN).write_text(token)
    (state_dir / CONFIG).write_text(config(state_dir, api_url, ca, namespace))
    daemons.start(PROMETHEUS, argv(state_dir))
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url()}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not daemons.alive(PROMETHEUS):
            raise LabError(f"prometheus exited; its log: {daemons.log_path(PROMETHEUS)}")
        time.sleep(0.2)
    raise LabError(f"prometheus did not become ready; its log: {daemons.log_path(PROMETHEUS)}")


def argv(state_dir: Path) -> list[str]:
    return ["ip", "netns", "exec", host_netns(f"node-{NODE}"), str(build_output(BUILD_SCRIPT, "prometheus")),
            f"--config.file={state_dir / CONFIG}", f"--storage.tsdb.path={state_dir / DATA}",
            "--storage.tsdb.retention.time=6h", f"--web.listen-address={node_addressing(NODE).lan_v4}:{PORT}"]
