"""Portico's lifecycle with its Helm chart, in the lab (which installs it: `helm upgrade --install`): an upgrade
to a new image tag while wrk runs through a VIP announced in layer 2, and an uninstall that leaves nothing."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
import yaml

from portico.dev.helm import CHART, NAMESPACE, RELEASE, helm
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
        wait_for(lambda: len(ready_pods(lab, POOL)) == 2, 60, "both echo pods ready")
        vip = wait_for(lambda: (lab.get("service", POOL).get("status", {}).get("loadBalancer", {}).get("ingress")
                                or [{}])[0].get("ip"), 20, "the Service's VIP")
        wait_for(lambda: lab.exec_in("client", "curl", "-s", "--max-time", "1", f"http://{vip}/").returncode == 0,
                 20, "the VIP answering the client")
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
