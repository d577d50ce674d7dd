"""The lab end to end: real control plane, lab kubelet, pods in network namespaces, client host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from portico.dev import addressing, registry
from portico.dev.netns import agent_pid, netns_pids
from tests.e2e.conftest import PORTICO, Lab, wait_for

ECHO = textwrap.dedent("""
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: echo, namespace: default}
    spec:
      replicas: 3
      selector: {matchLabels: {app: echo}}
      template:
        metadata: {labels: {app: echo}}
        spec:
          terminationGracePeriodSeconds: 2
          containers:
            - name: echo
              image: portico.dev/echo
              ports:
                - {name: http, containerPort: 8080, protocol: TCP}
                - {name: udp, containerPort: 9090, protocol: UDP}
              readinessProbe:
                httpGet: {path: /, port: http}
                periodSeconds: 1
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: echo, namespace: default}
    spec:
      selector: {app: echo}
      ports:
        - {name: http, port: 80, targetPort: http, protocol: TCP}
        - {name: udp, port: 9090, targetPort: udp, protocol: UDP}
""")

UDP_PROBE = ("import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2); "
             "s.sendto(b'hi',(sys.argv[1],9090)); print(s.recv(4096).decode())")


def ready_pods(lab: Lab, selector: str) -> list[dict[str, Any]]:
    pods = lab.get("pods", "-l", selector)["items"]
    return [p for p in pods if p["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def slice_addresses(lab: Lab, service: str) -> set[str]:
    slices = lab.get("endpointslices", "-l", f"kubernetes.io/service-name={service}")["items"]
    return {addr for s in slices for ep in s.get("endpoints") or [] if ep["conditions"].get("ready")
            for addr in ep["addresses"]}


def test_echo_deployment_reachable_from_client_and_follows_scaling(lab: Lab) -> None:
    lab.kubectl("apply", "-f", "-", stdin=ECHO)
    pods = wait_for(lambda: (p := ready_pods(lab, "app=echo")) and len(p) == 3 and p, 30, "3 ready echo pods")
    assert {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2"}
    ips = {p["status"]["podIP"]: p["metadata"]["name"] for p in pods}
    # The real EndpointSlice controller lists exactly the ready pods' IPs.
    wait_for(lambda: slice_addresses(lab, "echo") == set(ips), 15, "EndpointSlice with the pods' IPs")

    for ip, name in ips.items():
        http = lab.exec_in("client", "curl", "-s", "--max-time", "3", f"http://{ip}:8080/")
        assert http.returncode == 0, http.stderr
        assert json.loads(http.stdout) == {"pod": name, "node": next(
            p["spec"]["nodeName"] for p in pods if p["metadata"]["name"] == name), "client": "198.18.0.100"}
        udp = lab.exec_in("client", sys.executable, "-c", UDP_PROBE, ip)
        assert udp.returncode == 0, udp.stderr
        assert json.loads(udp.stdout)["pod"] == name

    lab.kubectl("scale", "deployment/echo", "--replicas=1")
    wait_for(lambda: len(slice_addresses(lab, "echo")) == 1, 10, "EndpointSlice down to 1 endpoint")
    wait_for(lambda: len(lab.get("pods", "-l", "app=echo")["items"]) == 1, 10, "pods down to 1")
    gone = set(ips) - slice_addresses(lab, "echo")
    for ip in gone:  # a deleted pod's process and namespace are gone with it
        assert lab.exec_in("client", "curl", "-s", "--max-time", "1", f"http://{ip}:8080/").returncode != 0

    lab.kubectl("delete", "deployment/echo", "service/echo")
    wait_for(lambda: lab.get("pods", "-l", "app=echo")["items"] == [], 10, "all echo pods gone")


def portico_image() -> str:
    tag = registry.built_tag()
    assert tag is not None, "`make image` builds the image the lab runs"
    return registry.image_reference(tag)


def waiting_reason(lab: Lab, pod: str) -> str | None:
    statuses = lab.get("pod", pod)["status"].get("containerStatuses") or []
    return statuses[0]["state"].get("waiting", {}).get("reason") if statuses else None


def test_an_image_that_cannot_be_pulled_backs_off_with_events(lab: Lab) -> None:
    """As a kubelet reports it: ErrImagePull, then ImagePullBackOff, with Warning Events naming the image — for a
    tag the lab registry does not hold, and for a registry outside the lab (never contacted)."""
    missing = portico_image().rsplit(":", 1)[0] + ":no-such-tag"
    for pod, image, why in (("mystery", "registry.example/nginx:1.27", "the lab pulls only from its registry"),
                            ("missing", missing, "manifest unknown")):
        lab.kubectl("run", pod, f"--image={image}", "--restart=Never")
        for reason in ("ErrImagePull", "ImagePullBackOff"):
            wait_for(lambda pod=pod, reason=reason: waiting_reason(lab, pod) == reason, 15, reason)  # type: ignore[misc]
        assert lab.get("pod", pod)["status"]["phase"] == "Pending"
        events = lab.get("events", "--field-selector", f"involvedObject.name={pod}")["items"]
        warnings = [e["message"] for e in events if e["type"] == "Warning"]
        assert any(m.startswith(f'Failed to pull image "{image}": ') and why in m for m in warnings), warnings
        assert {"Error: ErrImagePull", "Error: ImagePullBackOff"} <= set(warnings)
        assert f'Back-off pulling image "{image}"' in [e["message"] for e in events if e["reason"] == "BackOff"]
        lab.kubectl("delete", "pod", pod, "--wait=true", "--timeout=20s")


def process_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


# CAP_NET_BIND_SERVICE is 10, CAP_NET_ADMIN 12, CAP_NET_RAW 13 (linux/capability.h)
AGENT_CAPABILITIES = (1 << 10) | (1 << 12) | (1 << 13)


def test_portico_runs_from_the_registry_image_in_its_own_mount_namespace(lab: Lab) -> None:
    """The lab's agents and controllers run the image the registry holds, under runc: each in a mount namespace
    of its own whose root is the image's (not this machine's), the agent as root with exactly NET_ADMIN, NET_RAW and
    NET_BIND_SERVICE, the controller as the image's unprivileged user with no capability."""
    image = portico_image()
    pods = lab.get("pods", "-n", "portico-system")["items"]
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {image}
    digest = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", f"docker://{image}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert {s["imageID"] for p in pods for s in p["status"]["containerStatuses"]} == \
        {f"{image.rsplit(':', 1)[0]}@{digest}"}
    agent = agent_pid("node-1")
    assert agent is not None
    controller = next(pid for p in pods if p["metadata"]["name"].startswith("portico-controller")
                      for pid in netns_pids(addressing.pod_netns(p["metadata"]["uid"])))
    host_mounts = os.readlink("/proc/self/ns/mnt")
    for pid in (agent, controller):
        assert os.readlink(f"/proc/{pid}/ns/mnt") != host_mounts
        root = Path(f"/proc/{pid}/root")
        assert (root / "usr/local/lib/python3.11/dist-packages/portico/__init__.py").is_file()
        assert not (root / str(Path(__file__).resolve()).lstrip("/")).exists()  # this checkout is not in there
    agent_status, controller_status = process_status(agent), process_status(controller)
    assert int(agent_status["CapEff"], 16) == AGENT_CAPABILITIES, agent_status["CapEff"]
    assert int(agent_status["CapBnd"], 16) == AGENT_CAPABILITIES
    assert agent_status["Uid"].split()[0] == "0" and agent_status["NoNewPrivs"] == "1"
    assert controller_status["Uid"].split()[0] == "65532" and int(controller_status["CapEff"], 16) == 0


def test_without_net_admin_nothing_is_programmed(lab: Lab) -> None:
    """The agent's NET_ADMIN is needed: the image's nft, as the agent's root user with NET_RAW alone, is
    refused by the kernel; with NET_ADMIN added it programs a table (each pod in its own network namespace)."""
    image = portico_image()
    for name, caps in (("nft-without", ["NET_RAW"]), ("nft-with", ["NET_ADMIN", "NET_RAW"])):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": {
            "restartPolicy": "Never", "containers": [{
                "name": "nft", "image": image, "command": ["nft", "add", "table", "inet", "portico"],
                "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"], "add": caps}}}]}}
        lab.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    def phase(name: str) -> str | None:
        return lab.get("pod", name)["status"].get("phase")
    wait_for(lambda: phase("nft-without") == "Failed" and phase("nft-with") == "Succeeded", 30, "both pods done")
    assert "Operation not permitted" in lab.portico("dev", "logs", "pod/default/nft-without").stdout
    lab.kubectl("delete", "pod", "nft-without", "nft-with", "--wait=true", "--timeout=20s")


def test_pod_runs_portico_in_cluster_with_token_and_env(lab: Lab) -> None:
    pod = textwrap.dedent("""
        apiVersion: v1
        kind: Pod
        metadata: {name: whoami, namespace: default}
        spec:
          restartPolicy: Never
          containers:
            - name: portico
              image: IMAGE
              args: [dev, whoami]
              env:
                - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
                - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
                - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
                - {name: POD_GREETING, value: hello}
    """).replace("IMAGE", portico_image())
    lab.kubectl("apply", "-f", "-", stdin=pod)
    wait_for(lambda: lab.get("pod", "whoami")["status"].get("phase") == "Succeeded", 30, "whoami to succeed")
    got = lab.get("pod", "whoami")
    out = json.loads(lab.portico("dev", "logs", "pod/default/whoami").stdout)
    assert out["user"]["username"] == "system:serviceaccount:default:default"
    assert out["env"]["POD_NAME"] == "whoami"
    assert out["env"]["POD_IP"] == got["status"]["podIP"]
    assert out["env"]["NODE_NAME"] == got["spec"]["nodeName"]
    assert out["env"]["POD_GREETING"] == "hello"
    assert out["env"]["KUBERNETES_SERVICE_HOST"] == "198.18.0.1"
    lab.kubectl("delete", "pod", "whoami", "--wait=true", "--timeout=20s")


def test_host_network_pod_uses_node_address(lab: Lab) -> None:
    pod = textwrap.dedent("""
        apiVersion: v1
        kind: Pod
        metadata: {name: hostnet, namespace: default}
        spec:
          hostNetwork: true
          nodeSelector: {kubernetes.io/hostname: node-2}
          terminationGracePeriodSeconds: 1
          containers:
            - name: echo
              image: portico.dev/echo
              ports: [{containerPort: 18080}]
              readinessProbe: {tcpSocket: {port: 18080}, periodSeconds: 1}
    """)
    lab.kubectl("apply", "-f", "-", stdin=pod)
    wait_for(lambda: ready_pods(lab, "!app"), 20, "hostnet ready")  # the pod has no labels
    got = lab.get("pod", "hostnet")
    assert got["spec"]["nodeName"] == "node-2"
    assert got["status"]["podIP"] == got["status"]["hostIP"] == "198.18.0.12"
    http = lab.exec_in("client", "curl", "-s", "--max-time", "3", "http://198.18.0.12:18080/")
    assert json.loads(http.stdout)["pod"] == "hostnet"
    lab.kubectl("delete", "pod", "hostnet", "--wait=true", "--timeout=20s")


def test_crashing_container_is_restarted_with_backoff(lab: Lab) -> None:
    lab.kubectl("run", "crasher", f"--image={portico_image()}", "--restart=Always", "--", "no-such-command")
    def restarts() -> int:
        statuses = lab.get("pod", "crasher")["status"].get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0))
    wait_for(lambda: restarts() >= 2, 20, "two restarts")
    status = lab.get("pod", "crasher")["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 2  # argparse: unknown command
    reasons = [e["reason"] for e in lab.get("events", "--field-selector", "involvedObject.name=crasher")["items"]]
    assert "BackOff" in reasons
    lab.kubectl("delete", "pod", "crasher", "--wait=true", "--timeout=20s")


def test_cli_contract(lab: Lab) -> None:
    again = lab.portico("dev", "up")
    assert again.stdout.strip() == str(lab.kubeconfig)  # idempotent: reports the running lab
    assert lab.portico("dev", "kubeconfig").stdout.strip() == str(lab.kubeconfig)
    status = json.loads(lab.portico("dev", "status").stdout)
    assert status["running"] and all(status["components"].values())
    assert status["hosts"] == ["router", "client", "node-1", "node-2"]
    assert "etcd" in lab.portico("dev", "logs", "nope", check=False).stderr  # names what exists

    bad = lab.portico("dev", "exec", "node-9", "--", "true", check=False)
    assert bad.returncode != 0
    assert "valid hosts: router, client, node-1, node-2" in bad.stderr

    assert lab.exec_in("node-1", "ip", "-br", "addr", "show", "eth0").stdout.split()[2] == "198.18.0.11/24"

    other = subprocess.run([PORTICO, "dev", "up"], capture_output=True, text=True, check=False,
                           env={**lab.env, "PORTICO_DEV_DIR": str(lab.state_dir) + "-other"})
    assert other.returncode != 0
    assert "another Portico lab is running" in other.stderr and str(lab.state_dir) in other.stderr


def test_pre_stop_hooks_run_before_sigterm_within_the_grace_period(lab: Lab, tmp_path: Path) -> None:
    """The termination contract as a kubelet keeps it: each container's preStop hook (exec, httpGet, sleep) runs
    while the container still serves, then SIGTERM; a failing hook is an Event and does not stop the deletion."""
    marker = tmp_path / "pre-stop"
    hooks = {
        "hook-exec": {"exec": {"command": ["sh", "-c", f"curl -sf http://127.0.0.1:8080/ > {marker}"]}},
        "hook-sleep": {"sleep": {"seconds": 2}},
        "hook-fails": {"httpGet": {"path": "/", "port": 9}},  # nothing listens there
    }
    pods = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
             "spec": {"terminationGracePeriodSeconds": 10, "containers": [{
                 "name": "echo", "image": "portico.dev/echo", "ports": [{"name": "http", "containerPort": 8080}],
                 "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                 "lifecycle": {"preStop": hook}}]}} for name, hook in hooks.items()]
    lab.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(pods))
    wait_for(lambda: {p["metadata"]["name"] for p in ready_pods(lab, "!app")} >= set(hooks), 30, "pods ready")
    took = {}
    for name in hooks:
        started = time.monotonic()
        lab.kubectl("delete", "pod", name, "--wait=true", "--timeout=30s")
        took[name] = time.monotonic() - started
    print(f"deletion with a preStop hook: {', '.join(f'{k} {v:.1f} s' for k, v in took.items())}")
    assert json.loads(marker.read_text())["pod"] == "hook-exec"  # the hook ran in the pod, which still served
    assert 2.0 <= took["hook-sleep"] < 10  # the hook's time, then SIGTERM ends the echo at once
    events = lab.get("events", "--field-selector", "reason=FailedPreStopHook")["items"]
    assert {e["involvedObject"]["name"] for e in events} == {"hook-fails"}


def test_the_lab_registry_holds_the_image_make_image_built(lab: Lab) -> None:
    """The registry listens on loopback only, and `portico dev up` pushed the built image into it."""
    tag = registry.built_tag()
    assert tag is not None, "make image first (make test does)"
    listing = subprocess.run(["curl", "-sf", f"http://{registry.ADDRESS}/v2/{registry.REPOSITORY}/tags/list"],
                             capture_output=True, text=True, timeout=10, check=True)
    assert tag in json.loads(listing.stdout)["tags"]
    inspect = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.image_reference(tag)}"],
                             capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(inspect.stdout)["Labels"]["org.opencontainers.image.revision"] == tag.split("-", 1)[1]
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{registry.ADDRESS.rsplit(':', 1)[1]}"],
                               capture_output=True, text=True, check=True).stdout
    assert listening.split() and all(f" {registry.ADDRESS} " in f" {line.split()[3]} " for line in
                                     listening.strip().splitlines())
    assert json.loads(lab.portico("dev", "status").stdout)["components"][registry.REGISTRY] is True
