"""Layer-2 announcement in the lab: the client on the LAN reaches VIPs with no route of its own, because
one healthy node answers ARP/NDP for each; when that node's agent dies, its link goes down, or (under
externalTrafficPolicy Local) its only endpoint goes, another node takes over within a second.

Each failure runs under `portico.dev.probe` in the client: a datagram to the VIP every 10 ms (the
longest stretch without an echo is the gap), and a who-has question every 10 ms with every answer
captured (two MACs answering one question would be split brain).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from portico.announce.heartbeat import MAGIC, Signer, encode_body
from portico.dataplane.nft import OWN_NFT
from portico.dev.netns import agent_pid
from portico.dev.topology import link_up_commands, plan_lab
from tests.e2e.conftest import Lab, probe_during, wait_for

NODES = ("node-1", "node-2")
CLIENT = {4: "198.18.0.100", 6: "fd00:198:18::64"}
EXAMPLES = Path(__file__).parents[2] / "examples"
MANIFESTS = ("-f", str(EXAMPLES / "pool.yaml"), "-f", str(EXAMPLES / "ha.yaml"))  # an echo DaemonSet, ETP Local


def announcers(lab: Lab) -> dict[str, str]:
    """VIP -> the node the Service's portico.io/Announced condition names."""
    conditions = lab.get("service", "ha").get("status", {}).get("conditions", [])
    message = next((c["message"] for c in conditions if c["type"] == "portico.io/Announced"
                    and c["status"] == "True"), "")
    return dict(re.findall(r"(\S+) by (node-\d+)", message))


def mac_of(node: str) -> str:
    out = subprocess.run(["ip", "-n", f"portico-{node}", "-j", "link", "show", "eth0"], capture_output=True,
                         text=True, check=True).stdout
    return str(json.loads(out)[0]["address"])


def answering(lab: Lab, vip: str) -> str | None:
    """The node whose MAC answers ARP for the VIP now, as the client sees it."""
    macs = measure(lab, vip, 4, lambda: None, duration=1.2)["answering_macs"]
    assert isinstance(macs, dict)
    return next((node for node in NODES if mac_of(node) in macs), None)


def other(node: str) -> str:
    return next(n for n in NODES if n != node)


@pytest.fixture(scope="module")
def ha(lab: Lab) -> Iterator[dict[int, str]]:
    """The Service's VIP per family, once every VIP is announced."""
    lab.kubectl("apply", *MANIFESTS)
    wait_for(lambda: len(announcers(lab)) == 2, 90, "both VIPs announced")
    ingress = lab.get("service", "ha")["status"]["loadBalancer"]["ingress"]
    yield {4 if ":" not in i["ip"] else 6: i["ip"] for i in ingress}
    lab.kubectl("delete", *MANIFESTS)  # and wait: the pool is protected until its Services let go, and the
    # next module applies the same pool (applied while terminating, it would vanish under that module)


def measure(lab: Lab, vip: str, family: int, failure: Callable[[], None], duration: float = 4.0) -> dict[str, object]:
    """The probe with ARP/NDP questions, from the client's LAN address."""
    return probe_during(vip, CLIENT[family], failure, duration=duration)


def agent_gauges(lab: Lab, node: str) -> dict[str, float]:
    """The agent's announcement gauges, read from the client as a scraper would (empty while it is not up)."""
    text = lab.exec_in("client", "curl", "-s", "--max-time", "2",
                       f"http://{lab_node_address(node)}:9470/metrics").stdout
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith(("portico_announce_peers_alive ", "portico_l2_eligible_vips "))}


def settled(lab: Lab, family: int, vips: dict[int, str]) -> str:
    """The announcer of the family's VIP, once both agents run, hear each other and may answer for both VIPs (a
    previous test's failure restarted one: until it has heard its peer, it cannot know whom it takes over from)."""
    wait_for(lambda: agent_pid("node-1") and agent_pid("node-2"), 60, "both agents running")
    wait_for(lambda: all(agent_gauges(lab, n).get("portico_announce_peers_alive", 0) >= 1
                         and agent_gauges(lab, n).get("portico_l2_eligible_vips", 0) >= len(vips) for n in NODES),
             60, "both agents hearing each other, each eligible for the VIPs")
    time.sleep(1.5)  # a returning agent listens before it claims; let any failback happen first
    return str(wait_for(lambda: announcers(lab).get(vips[family]), 60, "an announcer"))


def assert_moved(result: dict[str, object], before: str) -> None:
    """The client saw a gap under a second, never two answers to one question, and the other node answering."""
    assert result["split_brain_rounds"] == 0, result
    assert isinstance(result["max_gap_ms"], float) and result["max_gap_ms"] < 1000, result
    answering = result["answering_macs"]
    assert isinstance(answering, dict) and mac_of(other(before)) in answering, result


def test_the_client_reaches_both_vips_with_no_route_and_the_status_names_the_announcer(
        lab: Lab, ha: dict[int, str]) -> None:
    routes = lab.exec_in("client", "ip", "-j", "route", "show").stdout + lab.exec_in(
        "client", "ip", "-6", "-j", "route", "show").stdout
    assert all(vip not in routes for vip in ha.values())
    for family, vip in ha.items():
        result = measure(lab, vip, family, lambda: None, duration=1.5)
        assert result["echoed"] == result["sent"], result
        answering = result["answering_macs"]
        assert isinstance(answering, dict) and set(answering) == {mac_of(announcers(lab)[vip])}, result
    metrics = lab.exec_in("client", "curl", "-s", f"http://{lab_node_address(announcers(lab)[ha[4]])}:9470/metrics")
    assert f'portico_l2_announced{{service="default/ha",vip="{ha[4]}"}} 1.0' in metrics.stdout


def lab_node_address(node: str) -> str:
    return f"198.18.0.{10 + int(node.split('-')[1])}"


@pytest.mark.parametrize("family", [4, 6])
def test_killing_the_announcing_agent_moves_the_vip_without_a_gap(lab: Lab, ha: dict[int, str], family: int) -> None:
    before = settled(lab, family, ha)
    pid = agent_pid(before)
    assert pid is not None

    def kill() -> None:
        subprocess.run(["kill", "-9", str(pid)], check=True)
    result = measure(lab, ha[family], family, kill)
    assert_moved(result, before)
    events = lab.kubectl("get", "events", "--field-selector", "involvedObject.name=ha,reason=AnnouncerChanged")
    assert re.search(rf"{other(before)} answers ARP/NDP for {re.escape(ha[family])} \({before} is down: silent "
                     r"for \d+ ms\)", events), events


def test_a_link_down_moves_the_vip_within_a_second(lab: Lab, ha: dict[int, str]) -> None:
    before = settled(lab, 4, ha)

    def link_down() -> None:
        subprocess.run(["ip", "-n", f"portico-{before}", "link", "set", "eth0", "down"], check=True)
    try:
        result = measure(lab, ha[4], 4, link_down)
    finally:
        for argv in link_up_commands(plan_lab(len(NODES)).host(before)):
            subprocess.run(argv, check=True)
    assert_moved(result, before)
    # The status follows whoever answers now: the other node, or (once the returning node's pod is ready again)
    # the node that outranks it. (The controller may itself have been on the failed node meanwhile.)
    wait_for(lambda: announcers(lab).get(ha[4]) == answering(lab, ha[4]), 30, "the status naming the announcer")
    restored = plan_lab(len(NODES)).host(before)  # the flap left the node as it was, for the tests after this one
    routes = subprocess.run(["ip", "-n", f"portico-{before}", "-j", "-6", "route"], capture_output=True, text=True,
                            check=True).stdout
    assert all(str(r.destination) in routes for r in restored.routes if r.via.version == 6), routes


def test_losing_the_only_local_endpoint_moves_the_vip(lab: Lab, ha: dict[int, str]) -> None:
    before = settled(lab, 4, ha)
    pod = next(p["metadata"]["name"] for p in lab.get("pods", "-l", "app=ha")["items"]
               if p["spec"]["nodeName"] == before)

    def delete_endpoint() -> None:
        lab.kubectl("delete", "pod", pod, "--wait=false")
    result = measure(lab, ha[4], 4, delete_endpoint)
    assert_moved(result, before)
    events = lab.kubectl("get", "events", "--field-selector", "involvedObject.name=ha,reason=AnnouncementWithdrawn")
    assert f"{before} stopped answering for {ha[4]}: no ready local endpoint on {before}" in events, events


def test_an_interface_that_does_not_exist_is_reported_and_harms_nothing(lab: Lab, ha: dict[int, str]) -> None:
    broken = ("apiVersion: portico.io/v1alpha1\nkind: L2Advertisement\nmetadata: {name: broken}\n"
              "spec: {interfaces: [eth9]}\n")
    lab.kubectl("apply", "-f", "-", stdin=broken)
    try:
        def events() -> str:
            return lab.kubectl("get", "events", "--field-selector",
                               "involvedObject.name=broken,reason=InterfaceMissing")
        wait_for(lambda: all(f"interface eth9 does not exist on {node}" in events() for node in NODES), 30,
                 "an InterfaceMissing event from each node")

        def problems() -> dict[str, str]:
            return {p["node"]: p["message"] for p in lab.get("l2advertisement", "broken").get("status", {}).get(
                "problems", [])}
        wait_for(lambda: problems() == {n: f"interface eth9 does not exist on {n}" for n in NODES}, 30,
                 "each node's entry in the status")
        result = measure(lab, ha[4], 4, lambda: None, duration=1.5)
        assert result["echoed"] == result["sent"] and result["split_brain_rounds"] == 0, result
    finally:
        lab.kubectl("delete", "-f", "-", stdin=broken)


def test_a_flushed_ruleset_on_the_announcing_node_is_repaired_within_two_seconds(
        lab: Lab, ha: dict[int, str]) -> None:
    node = settled(lab, 4, ha)

    def flush() -> None:
        subprocess.run(["ip", "netns", "exec", f"portico-{node}", "nft", "flush", "ruleset"], check=True)

    result = measure(lab, ha[4], 4, flush, duration=4.0)
    assert isinstance(result["max_gap_ms"], float) and result["max_gap_ms"] < 2000, result
    assert result["split_brain_rounds"] == 0, result
    metrics = lab.exec_in("client", "curl", "-s", f"http://{lab_node_address(node)}:9470/metrics").stdout
    assert re.search(r"^portico_agent_table_repairs_total [1-9]", metrics, re.M), metrics
    print(f"nft flush ruleset on {node}: longest gap {result['max_gap_ms']:.0f} ms")


def forger(host: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", f"portico-{host}", sys.executable, "-m", "tests.e2e.forger",
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def node_metrics(lab: Lab, node: str) -> str:
    return lab.exec_in("client", "curl", "-s", f"http://{lab_node_address(node)}:9470/metrics").stdout


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_forged_replayed_and_garbage_heartbeats_move_no_vip(lab: Lab, ha: dict[int, str]) -> None:
    """The client host attacks the node that does not announce the IPv4 VIP: it sniffs the announcer's beats,
    replays them, forges "the announcer has nothing eligible" (which would make the target claim the VIP too),
    unsigned and signed with a guessed key, all spoofed from the announcer's address with TTL 255, and floods
    the port with garbage from its own address and spoofed. No VIP may move; the target's CPU stays low."""
    owner = settled(lab, 4, ha)
    target = other(owner)
    src, dst = lab_node_address(owner), lab_node_address(target)
    captured = json.loads(finished(forger(target, "sniff", src, dst, "1.0")))  # a sniffer on the segment
    assert len(captured) >= 5, captured
    echo = bytes.fromhex(captured[-1])[37:45]  # the target's boot, as the announcer echoes it: no secret
    nothing = encode_body(owner, time.time_ns() + 10**12, 1, ())
    forged = [Signer([os.urandom(32)], nothing).seal(int.from_bytes(echo, "big")).hex(),  # a guessed key
              nothing.hex(),  # the unauthenticated format of earlier versions
              (MAGIC + b"\x01" + os.urandom(48) + nothing).hex()]  # the header right, the MAC made up
    garbage = [os.urandom(n).hex() for n in (1, 64, 1400)]
    changes_before = {n: metric(node_metrics(lab, n), "portico_l2_ownership_changes_total") for n in NODES}
    pid = agent_pid(target)
    assert pid is not None
    seconds = 4.0

    cpu: list[float] = []
    sent: list[int] = []

    def attack() -> None:
        start_cpu, start = cpu_seconds(pid), time.monotonic()
        procs = [forger("client", "send", src, dst, str(seconds), json.dumps(forged)),
                 forger("client", "send", src, dst, str(seconds), json.dumps(captured)),
                 forger("client", "send", src, dst, str(seconds), json.dumps(garbage)),
                 forger("client", "flood", dst, str(seconds))]
        sent.extend(int(finished(p)) for p in procs)
        cpu.append((cpu_seconds(pid) - start_cpu) / (time.monotonic() - start))

    result = measure(lab, ha[4], 4, attack, duration=seconds + 3)
    assert result["split_brain_rounds"] == 0, result
    answering = result["answering_macs"]
    assert isinstance(answering, dict) and set(answering) == {mac_of(owner)}, result
    assert result["echoed"] == result["sent"], result
    assert announcers(lab).get(ha[4]) == owner
    text = node_metrics(lab, target)
    rejected = {reason: metric(text, f'portico_announce_heartbeats_rejected_total{{reason="{reason}"}}')
                for reason in ("unauthenticated", "replayed", "malformed")}
    dropped = metric(text, "portico_announce_heartbeats_dropped_total")
    print(f"sent (forged, replayed, spoofed garbage, flood): {sent}; target agent CPU {cpu[0]:.2f} cores; "
          f"rejected {rejected}; dropped in the kernel {dropped:.0f}")
    assert all(count > 0 for count in rejected.values()), rejected
    assert dropped >= sent[3] * 0.5  # the flood from a non-peer address never reached the agent
    assert {n: metric(node_metrics(lab, n), "portico_l2_ownership_changes_total") for n in NODES} == changes_before
    assert cpu[0] < 0.5, f"the target agent used {cpu[0]:.2f} cores under the attack"


def test_the_agents_ports_are_bound_to_the_nodes_address_only(lab: Lab, ha: dict[int, str]) -> None:
    for node in NODES:
        listening = subprocess.run(["ip", "netns", "exec", f"portico-{node}", "ss", "-Hlnptu"], capture_output=True,
                                   text=True, check=True).stdout
        mine = [line.split() for line in listening.splitlines() if "portico" in line or "python" in line]
        bound = {(fields[0], fields[4]) for fields in mine}
        address = lab_node_address(node)
        assert ("tcp", f"{address}:9470") in bound and ("udp", f"{address}:9471") in bound, listening
        assert not any(local.startswith(("0.0.0.0:", "*:", "[::]:")) for _, local in bound), listening


# `nft` for the agents, with one rule the kernel refuses (masquerade where prerouting reaches: refused at commit,
# not by --check) added to every transaction that programs the given chain: a Service whose rules the kernel
# refuses, on the real agents and the real kernel, with no hook in Portico. The script is handed over as a file
# descriptor and nft exec'd in place, so each transaction keeps the agent's own nft PID (drift detection).
NFT_SHIM = """#!/usr/bin/python3
import os, re, sys
REAL, CHAIN = "/usr/sbin/nft", os.environ.get("REFUSED_CHAIN", "")
args = sys.argv[1:]
if args[-2:] == ["-f", "-"] and CHAIN:
    script = sys.stdin.read()
    if re.search(rf"^add chain inet portico {re.escape(CHAIN)}$", script, re.M):
        script += f"add rule inet portico {CHAIN} masquerade\\n"
    fd = os.memfd_create("transaction", 0)
    os.write(fd, script.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    args = [*args[:-1], f"/proc/self/fd/{fd}"]
os.execv(REAL, [REAL, *args])
"""
REFUSED_VIP = "198.18.0.250"


REFUSED_SERVICE = f"""
apiVersion: v1
kind: Service
metadata:
  name: refused
  namespace: default
  annotations: {{portico.io/load-balancer-ips: "{REFUSED_VIP}"}}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  loadBalancerSourceRanges: [198.18.0.0/15]  # a chain of its own: fe-198-18-0-250-udp-9090
  selector: {{app: ha}}
  ports:
    - {{name: udp, port: 9090, targetPort: udp, protocol: UDP}}
"""


@pytest.fixture
def shimmed_agents(lab: Lab) -> Iterator[None]:
    """The agents' nft replaced by the shim, as users would change a container: a ConfigMap volume first on PATH
    under the name the agent runs nft by (the shim execs the image's own link, so commits keep that name)."""
    shim = NFT_SHIM.replace('"/usr/sbin/nft"', f'"/usr/local/sbin/{OWN_NFT}"')
    lab.kubectl("create", "configmap", "-n", "portico-system", "nft-shim", f"--from-literal={OWN_NFT}={shim}")
    path = "/shim:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    def patch(delete: bool) -> None:
        marker = {"$patch": "delete"} if delete else {}
        container = {"name": "agent",
                     "env": [{"name": "PATH", **marker, **({} if delete else {"value": path})},
                             {"name": "REFUSED_CHAIN", **marker,
                              **({} if delete else {"value": "fe-198-18-0-250-udp-9090"})}],
                     "volumeMounts": [{"mountPath": "/shim", **marker, **({} if delete else {"name": "nft-shim"})}]}
        volume = {"name": "nft-shim", **marker, **({} if delete else {"configMap": {"name": "nft-shim",
                                                                                    "defaultMode": 0o755}})}
        lab.kubectl("patch", "-n", "portico-system", "daemonset/portico-agent", "--type=strategic", "-p",
                    json.dumps({"spec": {"template": {"spec": {"containers": [container], "volumes": [volume]}}}}))
        lab.kubectl("rollout", "status", "-n", "portico-system", "daemonset/portico-agent", "--timeout=120s")
    patch(delete=False)
    try:
        yield
    finally:
        lab.kubectl("delete", "service", "refused", "--ignore-not-found")
        patch(delete=True)
        lab.kubectl("delete", "configmap", "-n", "portico-system", "nft-shim")


def test_a_service_the_kernel_refuses_leaves_every_other_vip_answering(lab: Lab, ha: dict[int, str],
                                                                      shimmed_agents: None) -> None:
    owner = settled(lab, 4, ha)

    def create_refused() -> None:
        lab.kubectl("apply", "-f", "-", stdin=REFUSED_SERVICE)

    result = measure(lab, ha[4], 4, create_refused, duration=6.0)
    assert result["echoed"] == result["sent"], result  # the other VIP never missed a datagram
    assert result["split_brain_rounds"] == 0 and announcers(lab).get(ha[4]) == owner, result

    def problems() -> list[str]:
        events = lab.get("events", "--field-selector", "involvedObject.name=refused")["items"]
        return [e["message"] for e in events if e["reason"] == "ForwardingProblem"]
    found = wait_for(problems, 20, "a ForwardingProblem event on the refused Service")
    assert any("the kernel refused the rules for 198.18.0.250:9090/udp" in m
               and "Operation not supported" in m for m in found), found
    for node in NODES:  # left out everywhere, the rest programmed
        table = subprocess.run(["ip", "netns", "exec", f"portico-{node}", "nft", "list", "map", "inet", "portico",
                                "frontends4"], capture_output=True, text=True, check=True).stdout
        assert REFUSED_VIP not in table and ha[4] in table, table
    assert REFUSED_VIP not in announcers(lab)  # not announced: no node can serve it
