"""Least privilege, checked on the lab's API server: each ServiceAccount's permissions (`kubectl auth can-i --list`)
equal the allow-list in docs/security.md, and an agent may write its own node's PorticoNode only, and of pods'
status only the readiness gate's condition, on its own node."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import PodStatus
from lightkube.types import PatchType

from tests.e2e.conftest import Lab
from tests.security_doc import Grants, documented_grants

# What every authenticated identity may do (system:basic-user, system:discovery, system:public-info-viewer).
EVERYONE = {"selfsubjectaccessreviews.authorization.k8s.io", "selfsubjectrulesreviews.authorization.k8s.io",
            "selfsubjectreviews.authentication.k8s.io"}


def granted(lab: Lab, account: str, namespace: str) -> Grants:
    text = lab.kubectl("auth", "can-i", "--list", f"--as=system:serviceaccount:portico-system:{account}",
                       "-n", namespace)
    out: Grants = {}
    for line in text.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]$", line.strip())
        if match is None or match.group(2):  # non-resource URLs: discovery, for everyone
            continue
        resource, names, verbs = match.group(1), match.group(3), set(match.group(4).split())
        if names:  # a grant on named objects only: "daemonsets.apps (portico-agent)"
            resource = f"{resource} ({names})"
        if resource not in EVERYONE:
            out.setdefault(resource, set()).update(verbs)
    return out


def test_each_service_account_has_exactly_the_documented_permissions(lab: Lab) -> None:
    allowed = documented_grants()
    for account, component in (("portico-agent", "agent"), ("portico-controller", "controller")):
        cluster = granted(lab, account, "default")
        assert cluster == allowed[(component, "cluster")], f"{account} cluster-wide"
        extra = {r: v - cluster.get(r, set()) for r, v in granted(lab, account, "portico-system").items()}
        assert {r: v for r, v in extra.items() if v} == allowed.get((component, "portico-system"), {}), account


def agent_kubeconfig(lab: Lab) -> Path:
    """Credentials as node-1's agent holds them: a token bound to its pod (so naming its node)."""
    pods = lab.get("pods", "-n", "portico-system", "-l", "app.kubernetes.io/name=portico-agent")["items"]
    pod = next(p for p in pods if p["spec"]["nodeName"] == "node-1")
    token = lab.kubectl("create", "token", "portico-agent", "-n", "portico-system", "--bound-object-kind", "Pod",
                        "--bound-object-name", pod["metadata"]["name"], "--bound-object-uid",
                        pod["metadata"]["uid"]).strip()
    config = yaml.safe_load(lab.kubectl("config", "view", "--raw", "--minify"))
    config["users"] = [{"name": "agent", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "agent"
    path = lab.state_dir / "agent-node-1.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_agent_may_write_only_its_own_nodes_report(lab: Lab) -> None:
    path = agent_kubeconfig(lab)

    def patch(node: str) -> subprocess.CompletedProcess[str]:
        body = json.dumps({"metadata": {"annotations": {"portico.io/test": "written"}}})
        return subprocess.run(["kubectl", "--kubeconfig", str(path), "patch", "porticonode", node, "--type=merge",
                               "-p", body], capture_output=True, text=True, timeout=30, check=False)

    mine = patch("node-1")
    assert mine.returncode == 0, mine.stderr
    theirs = patch("node-2")
    assert theirs.returncode != 0 and "an agent may write only the PorticoNode of the node it runs on" in \
        theirs.stderr, theirs.stderr
    lab.kubectl("annotate", "porticonode", "node-1", "portico.io/test-")


def test_an_agent_may_set_only_the_readiness_gate_of_its_own_nodes_pods(lab: Lab) -> None:
    agent = Client(KubeConfig.from_file(agent_kubeconfig(lab)))  # a patch, as the agent sends it (no get first)
    pods = yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"gate-{node}"}, "spec": {
        "nodeName": node, "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "echo", "image": "portico.dev/echo"}]}} for node in ("node-1", "node-2")])
    lab.kubectl("apply", "-f", "-", stdin=pods)
    try:
        def refusal(pod: str, condition: str) -> str | None:
            body = {"status": {"conditions": [{"type": condition, "status": "True"}]}}
            try:
                agent.patch(PodStatus, pod, body, namespace="default", patch_type=PatchType.STRATEGIC)
            except ApiError as e:
                return e.status.message
            return None
        assert refusal("gate-node-1", "portico.io/programmed") is None
        assert "only of pods on the node it runs on" in (refusal("gate-node-2", "portico.io/programmed") or "")
        # A condition the pod does not have: a change whatever its kubelet has posted meanwhile (Ready may be True).
        assert "only the portico.io/programmed condition" in (refusal("gate-node-1", "example.com/other") or "")
    finally:
        lab.kubectl("delete", "pod", "gate-node-1", "gate-node-2", "--wait=false")
