"""Portico's lifecycle with its Helm chart, in the lab (which installs it: `helm upgrade --install`): lint, the
rendered chart against the lab's API server, the install serving a VIP, an upgrade to a new image tag while wrk
runs through a VIP announced in layer 2, and an uninstall that leaves nothing (last: it reinstalls)."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest
import yaml

from portico.dev.helm import CHART, NAMESPACE, RELEASE, helm, helm_binary
from portico.dev.install import install_portico
from tests.e2e.conftest import Lab, wait_for
from tests.e2e.test_rollout import ready_pods, wrk_failures

pytestmark = pytest.mark.e2e

POOL, CIDR = "upgrade", "198.18.0.240/29"  # on the LAN: reached through the announcing node's ARP answers
WRK_SECONDS = 45


def objects() -> list[dict[str, object]]:
    meta = {"name": POOL, "namespace": "default"}
    return [
        {"apiVersion": "portico.io/v1alpha1", "kind": "IPPool", "metadata": {"name": POOL},
         "spec": {"addresses": [CIDR]}},
        {"apiVersion": "portico.io/v1alpha1", "kind": "L2Advertisement", "metadata": {"name": POOL},
         "spec": {"ipPools": [POOL]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": POOL}},
            "template": {"metadata": {"labels": {"app": POOL}}, "spec": {"containers": [{
                "name": "echo", "image": "portico.dev/echo", "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {**meta, "annotations": {"portico.io/ip-pool": POOL}},
         "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False, "selector": {"app": POOL},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]


def agent_images(lab: Lab) -> set[str]:
    pods = lab.get("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=portico-agent")["items"]
    return {p["spec"]["containers"][0]["image"] for p in pods if not p["metadata"].get("deletionTimestamp")}


def upgrade(lab: Lab, tag: str) -> float:
    """`helm upgrade` to `tag`, waited for until every agent and controller runs it; the seconds it took."""
    started = time.monotonic()
    helm(lab.kubeconfig, "upgrade", RELEASE, str(CHART), "--namespace", NAMESPACE, "--reuse-values",
         "--set", f"image.tag={tag}")
    for workload in ("daemonset/portico-agent", "deployment/portico-controller"):
        lab.kubectl("-n", NAMESPACE, "rollout", "status", workload, "--timeout=120s")
    return time.monotonic() - started


def chart_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_chart_lints_and_its_schema_names_a_bad_value() -> None:
    out = chart_helm("lint", "--strict", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    bad = chart_helm("lint", str(CHART), "--set", "agent.metricsPort=70000")
    assert bad.returncode != 0 and "/agent/metricsPort" in bad.stdout + bad.stderr, bad.stdout + bad.stderr
    typo = chart_helm("lint", str(CHART), "--set", "controller.replica=3")  # not a value the chart has
    assert typo.returncode != 0 and "replica" in typo.stdout + typo.stderr, typo.stdout + typo.stderr


def test_the_rendered_chart_is_accepted_by_the_api_server(lab: Lab) -> None:
    """`helm template | kubectl apply --dry-run=server`: every object as the lab's API server would store it
    (schemas, CEL, RBAC escalation checks), with a pool and an announcement from the values; a pool the CRD
    refuses is refused naming the field."""
    def rendered(*values: str) -> str:
        out = chart_helm("template", "portico-check", str(CHART), "--namespace", NAMESPACE, *values)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def dry_run(manifests: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "apply", "--dry-run=server", "-f", "-"], input=manifests, env=lab.env,
                              capture_output=True, text=True, timeout=60, check=False)

    pools = ["--set", "ipPools[0].name=lan", "--set-json", 'ipPools[0].spec={"addresses": ["192.0.2.240/28"]}',
             "--set", "l2Advertisements[0].name=lan", "--set-json", 'l2Advertisements[0].spec={"ipPools": ["lan"]}']
    out = dry_run(rendered(*pools))
    assert out.returncode == 0, out.stderr
    assert "daemonset.apps/portico-agent configured (server dry run)" in out.stdout, out.stdout
    assert "ippool.portico.io/lan created (server dry run)" in out.stdout, out.stdout
    bad = ["--set", "ipPools[0].name=lan", "--set-json", 'ipPools[0].spec={"addresses": ["not-an-address"]}']
    out = dry_run(rendered(*bad))
    assert out.returncode != 0 and "spec.addresses" in out.stderr, out.stderr


def test_helm_install_serves_a_vip_the_client_reaches(lab: Lab) -> None:
    """The lab's Portico is a Helm release of this chart, running the lab registry's image, and it serves."""
    (release,) = json.loads(helm(lab.kubeconfig, "list", "--namespace", NAMESPACE, "--output", "json"))
    assert (release["name"], release["status"], release["chart"]) == (RELEASE, "deployed", "portico-0.1.0")
    (image,) = agent_images(lab)
    assert image.startswith("127.0.0.1:5055/portico:"), image
    lab.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects()))
    try:
        vip = serving(lab)
        answer = json.loads(lab.exec_in("client", "curl", "-s", "--max-time", "2", f"http://{vip}/").stdout)
        assert answer["pod"].startswith(POOL), answer
    finally:
        lab.kubectl("delete", "-f", "-", "--ignore-not-found", stdin=yaml.safe_dump_all(objects()))


def serving(lab: Lab) -> str:
    """The test Service's VIP, once both pods are ready and the client gets an answer through it."""
    wait_for(lambda: len(ready_pods(lab, POOL)) == 2, 60, "both echo pods ready")
    vip: str = wait_for(lambda: (lab.get("service", POOL).get("status", {}).get("loadBalancer", {}).get("ingress")
                                 or [{}])[0].get("ip"), 20, "the Service's VIP")
    wait_for(lambda: lab.exec_in("client", "curl", "-s", "--max-time", "1", f"http://{vip}/").returncode == 0,
             20, "the VIP answering the client")
    return vip


def test_helm_upgrade_to_a_new_image_tag_under_load_fails_no_request(lab: Lab) -> None:
    """The agents roll one node at a time; each one's last heartbeat asks its peers to hold its VIPs while its
    next incarnation starts (agent.restart), and the kernel keeps forwarding meanwhile: no VIP moves, so no
    established connection is cut and no request fails."""
    (before,) = agent_images(lab)
    repository, _, tag = before.rpartition(":")
    new_tag = f"{tag}-next"  # what a release pipeline pushes: a new tag (here of the same bits)
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{before}", f"docker://{repository}:{new_tag}"], check=True, timeout=120)
    lab.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects()))
    try:
        vip = serving(lab)
        out: dict[str, str] = {}
        wrk = threading.Thread(target=lambda: out.update(text=lab.exec_in(
            "client", "wrk", "-t1", "-c8", f"-d{WRK_SECONDS}s", "--timeout", "2s", f"http://{vip}/").stdout))
        wrk.start()
        time.sleep(3)
        took = upgrade(lab, new_tag)
        wrk.join()
        requests, failed = wrk_failures(out["text"])
        print(f"helm upgrade under load: {requests} requests, {failed} failed, upgrade {took:.1f} s")
        assert agent_images(lab) == {f"{repository}:{new_tag}"}
        assert took < WRK_SECONDS - 5, f"the upgrade took {took:.1f} s: longer than the load it ran under"
        assert requests > 1000 and failed == 0, out["text"]
    finally:
        lab.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=yaml.safe_dump_all(objects()))
        upgrade(lab, tag)  # the lab's own tag again, for the tests that follow


def test_helm_uninstall_leaves_nothing_and_services_lose_their_vip_cleanly(lab: Lab) -> None:
    """The pre-delete hook (`portico uninstall`) releases the Services and has every agent remove its table and
    PorticoNode; Helm deletes the rest. Portico is installed again afterwards, for the tests that follow."""
    (image,) = agent_images(lab)
    lab.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects()))
    nodes = [n["metadata"]["name"] for n in lab.get("nodes")["items"]]
    try:
        wait_for(lambda: (lab.get("service", POOL).get("status", {}).get("loadBalancer", {}).get("ingress")), 60,
                 "the Service's VIP")
        assert all(lab.exec_in(node, "nft", "list", "table", "inet", "portico").returncode == 0 for node in nodes)
        out = helm(lab.kubeconfig, "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "3m")
        print(out)

        svc = lab.get("service", POOL)
        assert not svc["status"].get("loadBalancer", {}).get("ingress"), svc["status"]
        assert not [c for c in svc["status"].get("conditions", []) if c["type"].startswith("portico.io/")]
        assert not [f for f in svc["metadata"].get("finalizers", []) if f.startswith("portico.io/")]
        for kind in ("ipallocations", "porticonodes"):
            assert lab.get(kind)["items"] == [], kind
        pool = lab.get("ippool", POOL)  # the user's own pool stays (the CRDs do), but nothing holds it any more
        assert "portico.io/pool-protection" not in pool["metadata"].get("finalizers", [])
        wait_for(lambda: lab.get("all", "-n", NAMESPACE)["items"] == [], 30, f"nothing left in {NAMESPACE}")
        for kind in ("clusterroles", "clusterrolebindings", "validatingadmissionpolicies"):
            names = [o["metadata"]["name"] for o in lab.get(kind)["items"]]
            assert not [n for n in names if n.startswith("portico")], (kind, names)
        for node in nodes:
            listed = lab.exec_in(node, "nft", "list", "table", "inet", "portico")
            assert listed.returncode != 0 and "No such file or directory" in listed.stderr, (node, listed.stdout)
    finally:
        lab.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=yaml.safe_dump_all(objects()))
        install_portico(lab.kubeconfig, image, time.monotonic() + 180)
