"""Traffic from the client host to a VIP, through a node's agent, straight to pod IPs.

The client reaches this module's pool (off the LAN, not announced) through node-1 by a static route: these
tests are about node-1's rules. Announcement has its own (test_announce_l2.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Lab, wait_for

POOL = textwrap.dedent("""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {name: dataplane}
    spec: {addresses: [198.18.100.32/28]}
""")
NODE1_LAN = "198.18.0.11"


def manifests(name: str, replicas: int, *, policy: str = "Cluster") -> str:
    return textwrap.dedent(f"""
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: {name}, namespace: default}}
        spec:
          replicas: {replicas}
          selector: {{matchLabels: {{app: {name}}}}}
          template:
            metadata: {{labels: {{app: {name}}}}}
            spec:
              containers:
                - name: echo
                  image: portico.dev/echo
                  ports:
                    - {{name: http, containerPort: 8080, protocol: TCP}}
                    - {{name: udp, containerPort: 9090, protocol: UDP}}
                  readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: default}}
        spec:
          type: LoadBalancer
          allocateLoadBalancerNodePorts: false
          externalTrafficPolicy: {policy}
          selector: {{app: {name}}}
          ports:
            - {{name: http, port: 80, targetPort: http, protocol: TCP}}
            - {{name: udp, port: 9090, targetPort: udp, protocol: UDP}}
    """)


# Runs in the client host: N fresh connections (or datagrams), tallied by what the pod reported.
PROBE = textwrap.dedent("""
    import collections, json, socket, sys
    vip, proto, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = collections.Counter()
    for _ in range(n):
        if proto == "tcp":
            s = socket.create_connection((vip, 80), timeout=3)
            s.sendall(b"GET / HTTP/1.1\\r\\nHost: e2e\\r\\nConnection: close\\r\\n\\r\\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            body = data.split(b"\\r\\n\\r\\n", 1)[1]
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3)
            s.sendto(b"hi", (vip, 9090))
            body = s.recv(4096)
        s.close()
        reply = json.loads(body)
        seen[f"{reply['pod']} {reply['client']}"] += 1
    print(json.dumps(seen))
""")


def probe(lab: Lab, vip: str, proto: str, n: int) -> Counter[str]:
    r = lab.exec_in("client", sys.executable, "-c", PROBE, vip, proto, str(n))
    assert r.returncode == 0, r.stderr
    return Counter(json.loads(r.stdout))


def external_ip(lab: Lab, name: str) -> str | None:
    ingress = lab.get("service", name).get("status", {}).get("loadBalancer", {}).get("ingress") or []
    return ingress[0]["ip"] if ingress else None


def ready_pods(lab: Lab, app: str) -> dict[str, str]:
    """Ready pod name -> node."""
    pods = lab.get("pods", "-l", f"app={app}")["items"]
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and not p["metadata"].get("deletionTimestamp")}


def slots_on(lab: Lab, node: str, vip: str) -> dict[int, str]:
    """Slot -> pod address, for new TCP flows to vip:80 in node's table."""
    out = lab.exec_in(node, "nft", "-j", "list", "map", "inet", "portico", "backends4_tcp").stdout
    elements = json.loads(out)["nftables"][1]["map"].get("elem", [])
    return {key["concat"][2]: value["concat"][0] for key, value in elements if key["concat"][0] == vip}


def backends_on(lab: Lab, node: str, vip: str) -> set[str]:
    """The pod addresses node's table sends new TCP flows for vip:80 to."""
    return set(slots_on(lab, node, vip).values())


def chain_on(lab: Lab, node: str, vip: str) -> str | None:
    """The chain node's table sends new TCP flows for vip:80 to, and its rules, as text."""
    out = lab.exec_in(node, "nft", "-j", "list", "map", "inet", "portico", "frontends4").stdout
    elements = json.loads(out)["nftables"][1]["map"].get("elem", [])
    chain = next((value["goto"]["target"] for key, value in elements
                  if key["concat"][0] == vip and key["concat"][2] == 80), None)
    if chain is None:
        return None
    return chain + "\n" + lab.exec_in(node, "nft", "list", "chain", "inet", "portico", chain).stdout


@pytest.fixture(scope="module")
def routed(lab: Lab) -> Iterator[None]:
    lab.kubectl("apply", "-f", "-", stdin=POOL)
    lab.exec_in("client", "ip", "route", "add", "198.18.100.32/28", "via", NODE1_LAN)
    yield
    lab.exec_in("client", "ip", "route", "del", "198.18.100.32/28")
    lab.kubectl("delete", "ippool", "dataplane", "--wait=false")


def deploy(lab: Lab, name: str, replicas: int, policy: str = "Cluster") -> str:
    lab.kubectl("apply", "-f", "-", stdin=manifests(name, replicas, policy=policy))
    wait_for(lambda: len(ready_pods(lab, name)) == replicas, 30 + 6 * replicas, f"{replicas} {name} pods ready")
    vip = wait_for(lambda: external_ip(lab, name), 20, f"{name} gets an address")
    usable = sum(1 for node in ready_pods(lab, name).values() if policy == "Cluster" or node == "node-1")
    wait_for(lambda: len(backends_on(lab, "node-1", vip)) == usable, 10, f"rules for all {usable} usable pods")
    return str(vip)


def test_every_pod_over_tcp_and_udp_spread_evenly_and_rules_follow_scaling(lab: Lab, routed: None) -> None:
    vip = deploy(lab, "spread", 3)
    pods = ready_pods(lab, "spread")
    assert len(set(pods.values())) == 2, f"pods should span both nodes: {pods}"
    tcp = probe(lab, vip, "tcp", 3000)
    by_pod = Counter({k.split()[0]: v for k, v in tcp.items()})
    assert set(by_pod) == set(pods)
    assert all(850 <= c <= 1150 for c in by_pod.values()), f"random spread beyond +-15%: {by_pod}"
    for seen, count in tcp.items():  # who the pod saw as client: node-1 SNATs only for the other node's pods
        pod, client = seen.split()
        assert client == ("198.18.0.100" if pods[pod] == "node-1" else NODE1_LAN), (seen, count)
    udp = probe(lab, vip, "udp", 300)
    assert {k.split()[0] for k in udp} == set(pods)

    lab.kubectl("scale", "deployment", "spread", "--replicas=4")
    new = wait_for(lambda: set(ready_pods(lab, "spread")) - set(pods), 60, "a fourth pod ready")
    # How soon is the bench's question (bench/rotation.py); here: that the rules follow, both ways.
    wait_for(lambda: len(backends_on(lab, "node-1", vip)) == 4, 10, "the new pod in the rules", interval=0.05)
    assert set(new) <= {k.split()[0] for k in probe(lab, vip, "tcp", 200)}

    victim = sorted(pods)[0]
    address = lab.get("pod", victim)["status"]["podIP"]
    assert address in backends_on(lab, "node-1", vip)
    lab.kubectl("delete", "pod", victim, "--wait=false")  # its replacement may be in the rules by the time we look
    wait_for(lambda: address not in backends_on(lab, "node-1", vip), 10, "the deleted pod out of the rules",
             interval=0.05)
    lab.kubectl("delete", "deployment,service", "spread")


def test_local_traffic_policy_keeps_the_client_address(lab: Lab, routed: None) -> None:
    vip = deploy(lab, "local", 2, policy="Local")
    pods = ready_pods(lab, "local")
    on_node1 = {p for p, n in pods.items() if n == "node-1"}
    assert on_node1 and len(on_node1) < len(pods), f"the lab should spread 2 pods over 2 nodes: {pods}"
    seen = probe(lab, vip, "tcp", 100)
    assert {k.split()[0] for k in seen} == on_node1  # only node-1's own pod
    assert {k.split()[1] for k in seen} == {"198.18.0.100"}  # and it sees the real client
    lab.kubectl("delete", "deployment,service", "local")


def test_an_established_connection_survives_an_agent_restart(lab: Lab, routed: None) -> None:
    vip = deploy(lab, "steady", 2)
    code = ("import socket,sys\ns=socket.create_connection((sys.argv[1],80),timeout=5)\n"
            "for i in range(2):\n"
            "  s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); print(s.recv(4096).split(b'\\r\\n\\r\\n')[1]"
            ".decode().strip(), flush=True); sys.stdin.readline()\n")
    proc = subprocess.Popen(["ip", "netns", "exec", "portico-client", sys.executable, "-c", code, vip],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = json.loads(proc.stdout.readline())["pod"]
        agent = next(p["metadata"]["name"] for p in lab.get("pods", "-n", "portico-system", "-l",
                                                             "app.kubernetes.io/name=portico-agent")["items"]
                     if p["spec"]["nodeName"] == "node-1")
        lab.kubectl("delete", "pod", "-n", "portico-system", agent)
        wait_for(lambda: len(ready_pods_in(lab, "portico-system", "app.kubernetes.io/name=portico-agent")) == 2,
                 30, "the agent back")
        lab.kubectl("scale", "deployment", "steady", "--replicas=3")
        wait_for(lambda: len(backends_on(lab, "node-1", vip)) == 3, 60, "the new agent serving a scale-up")
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["pod"] == first
    finally:
        proc.kill()
        proc.wait()
    lab.kubectl("delete", "deployment,service", "steady")


def ready_pods_in(lab: Lab, namespace: str, selector: str) -> list[str]:
    pods = lab.get("pods", "-n", namespace, "-l", selector)["items"]
    return [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def scrape(lab: Lab, node_lan: str) -> str:
    r = lab.exec_in("client", "curl", "-s", "--max-time", "5", f"http://{node_lan}:9470/metrics")
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_round_robin_then_client_ip_affinity_then_source_ranges(lab: Lab, routed: None) -> None:
    vip = deploy(lab, "policy", 3)
    pods = ready_pods(lab, "policy")
    lab.kubectl("annotate", "service", "policy", "portico.io/lb-algorithm=round-robin")
    wait_for(lambda: "numgen inc mod 3" in (chain_on(lab, "node-1", vip) or ""), 10, "round-robin rules")
    by_pod = Counter({k.split()[0]: v for k, v in probe(lab, vip, "tcp", 3000).items()})
    assert set(by_pod) == set(pods) and all(850 <= c <= 1150 for c in by_pod.values()), by_pod

    lab.kubectl("patch", "service", "policy", "-p", json.dumps(
        {"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}))
    wait_for(lambda: "@aff-" in (chain_on(lab, "node-1", vip) or ""), 10, "affinity rules")
    pinned = {k.split()[0] for k in probe(lab, vip, "tcp", 60)}
    assert len(pinned) == 1, pinned  # round-robin would have used all three

    lab.kubectl("patch", "service", "policy", "-p", '{"spec": {"loadBalancerSourceRanges": ["198.18.0.200/32"]}}')
    wait_for(lambda: "198.18.0.200" in (chain_on(lab, "node-1", vip) or ""), 10, "source-range rules")
    refused = lab.exec_in("client", "curl", "-s", "--max-time", "1", f"http://{vip}/")
    assert refused.returncode == 28, refused  # dropped: a timeout, not a reset
    dropped = next(line for line in scrape(lab, NODE1_LAN).splitlines()
                   if line.startswith("portico_frontend_dropped_packets_total") and 'service="default/policy"' in line
                   and 'port="80"' in line)
    assert float(dropped.split()[-1]) >= 1, dropped
    lab.kubectl("patch", "service", "policy", "-p", '{"spec": {"loadBalancerSourceRanges": ["198.18.0.100/32"]}}')
    wait_for(lambda: "198.18.0.100" in (chain_on(lab, "node-1", vip) or ""), 10, "source ranges with the client")
    assert {k.split()[0] for k in probe(lab, vip, "tcp", 5)} == pinned  # allowed again, and still pinned
    lab.kubectl("delete", "deployment,service", "policy")


def test_maglev_pins_a_client_on_every_node_and_removing_one_of_ten_remaps_little(lab: Lab, routed: None) -> None:
    vip = deploy(lab, "hash", 10)
    lab.kubectl("annotate", "service", "hash", "portico.io/lb-algorithm=maglev")
    wait_for(lambda: "maglev" in (chain_on(lab, "node-1", vip) or ""), 10, "maglev rules")
    before = wait_for(lambda: slots_on(lab, "node-1", vip), 5, "the Maglev table")
    assert len(set(before.values())) == 10
    assert wait_for(lambda: slots_on(lab, "node-2", vip) == before, 10, "node-2 holds the same table")
    assert len(probe(lab, vip, "tcp", 50)) == 1  # one client, one pod

    lab.kubectl("scale", "deployment", "hash", "--replicas=9")
    after = wait_for(lambda: (t := slots_on(lab, "node-1", vip)) and len(set(t.values())) == 9 and t, 30,
                     "the table without the removed pod")
    assert len(after) == len(before)
    moved = sum(1 for slot, pod in before.items() if after[slot] != pod) / len(before)
    print(f"maglev: removing 1 of 10 backends remapped {moved:.1%} of {len(before)} slots")
    assert moved <= 1 / 10 + 0.02, moved
    lab.kubectl("delete", "deployment,service", "hash")
