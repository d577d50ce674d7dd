"""BGP announcement in the lab: every node peers with the router (BIRD) and advertises the VIPs it can serve;
the router installs one ECMP route per VIP and the client, behind the router, reaches them with no route to
any node. A node that dies, loses its link, or (under externalTrafficPolicy Local) its only endpoint is
dropped from the route within a second; when it recovers it is added back. Bad peer configuration is
reported on the BGPPeer and harms no other session.

The router's view is read with `birdc` (what BGP carried) and `ip route` (what the kernel forwards by).
Failures run under `portico.dev.probe` from the client with 16 UDP flows (the router hashes each to a
node, so some are on the node that fails): the longest silence of any flow is the gap.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from portico.dev.netns import agent_pid
from portico.dev.router import birdc_argv
from portico.dev.topology import link_up_commands, plan_lab
from tests.e2e.conftest import Lab, probe_during, wait_for

NODES = ("node-1", "node-2")
NEXT_HOPS = {4: {"node-1": "198.18.0.11", "node-2": "198.18.0.12"},
             6: {"node-1": "fd00:198:18::b", "node-2": "fd00:198:18::c"}}
CLIENT = {4: "198.18.1.100", 6: "fd00:198:18:1::64"}  # on its segment behind the router
EXAMPLES = Path(__file__).parents[2] / "examples"
MANIFESTS = ("-f", str(EXAMPLES / "pool.yaml"), "-f", str(EXAMPLES / "ha.yaml"), "-f", str(EXAMPLES / "bgp.yaml"))


def next_hops(lab: Lab, vip: str) -> set[str]:
    """The nodes the router's kernel forwards the VIP to."""
    family = "-6" if ":" in vip else "-4"
    out = subprocess.run(["ip", "-n", "portico-router", family, "-j", "route", "show", vip], capture_output=True,
                         text=True, check=True).stdout
    hops: set[str] = set()
    for route in json.loads(out or "[]"):
        hops |= {h["gateway"] for h in route.get("nexthops", [route]) if "gateway" in h}
    by_address = {a: n for family_hops in NEXT_HOPS.values() for n, a in family_hops.items()}
    return {by_address[h] for h in hops if h in by_address}


def bird_routes(lab: Lab, vip: str) -> str:
    prefix = f"{vip}/{128 if ':' in vip else 32}"
    return subprocess.run(birdc_argv(lab.state_dir, "show", "route", "all", "for", prefix), capture_output=True,
                          text=True, check=True).stdout


def over_both_nodes(lab: Lab, vip: str) -> bool:
    return next_hops(lab, vip) == set(NODES)


def established_with_bfd(lab: Lab, peer: str) -> bool:
    return {n: (s["state"], "BFD Up" in s["message"]) for n, s in sessions(lab, peer).items()} == dict.fromkeys(
        NODES, ("Established", True))


def announced(lab: Lab) -> dict[str, str]:
    """VIP -> the nodes the Service's portico.io/Announced condition says advertise it over BGP."""
    conditions = lab.get("service", "ha-bgp").get("status", {}).get("conditions", [])
    message = next((c["message"] for c in conditions if c["type"] == "portico.io/Announced"
                    and c["status"] == "True"), "")
    return dict(re.findall(r"(\S+) by ([\w, -]+?) \(BGP\)", message))


def sessions(lab: Lab, peer: str) -> dict[str, dict[str, str]]:
    status = lab.get("bgppeer", peer).get("status", {})
    return {s["node"]: s for s in status.get("sessions", [])}


@pytest.fixture(scope="module")
def vips(lab: Lab) -> Iterator[dict[int, str]]:
    """The Service's VIP per family, once the router forwards each to both nodes."""
    lab.kubectl("apply", *MANIFESTS)
    ingress = wait_for(lambda: lab.get("service", "ha-bgp").get("status", {}).get("loadBalancer", {}).get(
        "ingress"), 60, "addresses for ha-bgp")
    out = {4 if ":" not in i["ip"] else 6: i["ip"] for i in ingress}
    for vip in out.values():
        wait_for(partial(over_both_nodes, lab, vip), 90, f"ECMP route for {vip} over both nodes")
    yield out
    lab.kubectl("delete", *MANIFESTS)  # and wait: the next module applies some of the same objects


def probe(lab: Lab, vip: str, family: int, failure: Callable[[], None]) -> dict[str, object]:
    """The probe from behind the router: datagrams only, on 16 flows."""
    return probe_during(vip, CLIENT[family], failure, "--no-arp", "--flows", "16")


def both_back(lab: Lab, vips: dict[int, str]) -> None:
    wait_for(lambda: agent_pid("node-1") and agent_pid("node-2"), 60, "both agents running")
    for vip in vips.values():
        wait_for(partial(over_both_nodes, lab, vip), 90, f"{vip} over both nodes again")


def test_the_router_learns_each_vip_from_every_node_with_the_configured_attributes(
        lab: Lab, vips: dict[int, str]) -> None:
    for family, vip in vips.items():
        routes = bird_routes(lab, vip)
        for node in NODES:
            assert f"via {NEXT_HOPS[family][node]}" in routes, routes  # one path from each node
        assert routes.count("BGP.local_pref: 200") == 2, routes
        assert routes.count("BGP.community: (64512,100)") == 2, routes
        assert routes.count("BGP.large_community: (64512, 1, 2)") == 2, routes
    for peer in ("router-v4", "router-v6"):  # the status follows within a second or two
        wait_for(partial(established_with_bfd, lab, peer), 10, f"{peer}'s sessions reported established")
    wait_for(lambda: announced(lab) == {vip: "node-1, node-2" for vip in vips.values()}, 20,
             "the Service's condition naming both nodes")
    metrics = lab.exec_in("client", "curl", "-s", "http://198.18.0.11:9470/metrics").stdout
    assert f'portico_bgp_advertised{{service="default/ha-bgp",vip="{vips[4]}"}} 1.0' in metrics, metrics
    assert 'portico_bgp_session_established{peer="router-v4"} 1.0' in metrics
    assert 'portico_bfd_session_up{peer="router-v6"} 1.0' in metrics
    for vip in vips.values():  # the client's way to them is its gateway, the router: no route to any node
        way = json.loads(lab.exec_in("client", "ip", "-j", "route", "get", vip).stdout)[0]
        assert way["gateway"] in ("198.18.1.1", "fd00:198:18:1::1") and way["dev"] == "eth1", way


@pytest.mark.parametrize("family", [4, 6])
def test_client_flows_spread_over_both_nodes_and_keep_the_client_address(
        lab: Lab, vips: dict[int, str], family: int) -> None:
    host = f"[{vips[family]}]" if family == 6 else vips[family]
    seen: set[str] = set()
    for _ in range(24):
        out = lab.exec_in("client", "curl", "-s", "-m", "2", f"http://{host}/").stdout
        answer = json.loads(out)
        assert answer["client"] == CLIENT[family], answer
        seen.add(answer["node"])
    assert seen == set(NODES), seen


def test_killing_an_agent_withdraws_its_routes_at_once_and_its_return_restores_them(
        lab: Lab, vips: dict[int, str]) -> None:
    both_back(lab, vips)
    pid = agent_pid("node-1")
    assert pid is not None
    killed_at = time.monotonic()
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_for(lambda: next_hops(lab, vips[4]) == {"node-2"}, 5, "node-1 dropped from the route", interval=0.02)
    print(f"route withdrawn {1000 * (time.monotonic() - killed_at):.0f} ms after kill -9")
    assert time.monotonic() - killed_at < 1.0  # its sessions closed with it: no hold time to wait out
    both_back(lab, vips)  # the kubelet restarts the agent; it advertises again


@pytest.mark.parametrize("family", [4, 6])
def test_a_link_down_drops_the_node_within_a_second_and_recovery_adds_it_back(
        lab: Lab, vips: dict[int, str], family: int) -> None:
    both_back(lab, vips)

    def link_down() -> None:
        subprocess.run(["ip", "-n", "portico-node-1", "link", "set", "eth0", "down"], check=True)
    try:
        result = probe(lab, vips[family], family, link_down)
        # Status comes from the controller, which may be on the node just cut off: allow for its standby to take
        # the lease (15 s) before it can write.
        wait_for(lambda: announced(lab).get(vips[family]) == "node-2", 30, "the Service's condition naming node-2")
    finally:
        for argv in link_up_commands(plan_lab(len(NODES)).host("node-1")):
            subprocess.run(argv, check=True)
    assert isinstance(result["max_gap_ms"], float) and result["max_gap_ms"] < 1000, result
    assert next_hops(lab, vips[family]) <= {"node-2"}
    both_back(lab, vips)


def test_losing_the_only_local_endpoint_withdraws_the_nodes_route(lab: Lab, vips: dict[int, str]) -> None:
    both_back(lab, vips)
    pod = next(p["metadata"]["name"] for p in lab.get("pods", "-l", "app=ha")["items"]
               if p["spec"]["nodeName"] == "node-1")

    seen: list[set[str]] = []

    def delete_endpoint() -> None:
        lab.kubectl("delete", "pod", pod, "--wait=false")
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # the router's route, while the probe runs
            seen.append(next_hops(lab, vips[4]))
            time.sleep(0.02)
    result = probe(lab, vips[4], 4, delete_endpoint)
    assert {"node-2"} in seen, seen  # node-1 left the route (its new pod was not ready yet)
    assert isinstance(result["max_gap_ms"], float) and result["max_gap_ms"] < 1000, result
    events = lab.kubectl("get", "events", "--field-selector", "involvedObject.name=ha-bgp,reason=BGPWithdrawn")
    assert f"node-1 withdrew {vips[4]}: no ready local endpoint on node-1" in events, events
    both_back(lab, vips)  # the DaemonSet's new pod becomes ready: node-1 advertises again


def _patch_peer(lab: Lab, peer: str, spec: str) -> None:
    lab.kubectl("patch", "bgppeer", peer, "--type=merge", "-p", f'{{"spec": {spec}}}')


def test_a_wrong_asn_is_reported_and_leaves_the_other_peer_alone(lab: Lab, vips: dict[int, str]) -> None:
    both_back(lab, vips)
    _patch_peer(lab, "router-v4", '{"peerASN": 64999}')
    try:
        wait_for(lambda: all("session was refused" in s["message"] for s in sessions(lab, "router-v4").values())
                 and len(sessions(lab, "router-v4")) == 2, 30, "the refusal reported by both nodes")
        assert next_hops(lab, vips[6]) == set(NODES)  # the IPv6 peer and its routes are untouched
        assert {s["state"] for s in sessions(lab, "router-v6").values()} == {"Established"}
    finally:
        _patch_peer(lab, "router-v4", '{"peerASN": 64512}')
    both_back(lab, vips)


def test_a_wrong_password_is_reported_and_leaves_the_other_peer_alone(lab: Lab, vips: dict[int, str]) -> None:
    both_back(lab, vips)
    lab.kubectl("create", "secret", "generic", "-n", "portico-system", "wrong-password",
                "--from-literal=password=not-it")
    _patch_peer(lab, "router-v6", '{"passwordSecret": {"name": "wrong-password"}}')
    try:
        wait_for(lambda: all(s["state"] != "Established" and "password" in s["message"]
                             for s in sessions(lab, "router-v6").values()), 60, "the failure reported")
        assert next_hops(lab, vips[4]) == set(NODES)
    finally:
        _patch_peer(lab, "router-v6", '{"passwordSecret": {"name": "lab-router"}}')
        lab.kubectl("delete", "secret", "-n", "portico-system", "wrong-password")
    both_back(lab, vips)


def test_a_peer_that_never_answers_and_a_missing_secret_are_reported(lab: Lab, vips: dict[int, str]) -> None:
    silent = ("apiVersion: portico.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: silent}\n"
              "spec: {peerAddress: 198.18.0.3, peerASN: 64512, myASN: 64512}\n---\n"
              "apiVersion: portico.io/v1alpha1\nkind: BGPPeer\nmetadata: {name: no-secret}\n"
              "spec: {peerAddress: 198.18.0.4, peerASN: 64512, myASN: 64512, passwordSecret: {name: nope}}\n")
    lab.kubectl("apply", "-f", "-", stdin=silent)
    try:
        wait_for(lambda: len(sessions(lab, "silent")) == 2 and all(
            s["state"] in ("Active", "Connect", "Idle") and "not established" in s["message"]
            for s in sessions(lab, "silent").values()), 30, "the silent peer reported")
        wait_for(lambda: len(sessions(lab, "no-secret")) == 2 and all(
            s["state"] == "NotConfigured" and re.search(r"Secret portico-system/nope", s["message"])
            for s in sessions(lab, "no-secret").values()), 30, "the missing Secret reported")
        for vip in vips.values():
            assert next_hops(lab, vip) == set(NODES)
    finally:
        lab.kubectl("delete", "-f", "-", stdin=silent)


def test_a_node_selector_matching_nothing_is_reported_on_each_kind(lab: Lab, vips: dict[int, str]) -> None:
    nowhere = "nodeSelector: {matchLabels: {rack: nowhere}}"
    objects = (f"apiVersion: portico.io/v1alpha1\nkind: L2Advertisement\nmetadata: {{name: nowhere}}\n"
               f"spec: {{{nowhere}}}\n---\n"
               f"apiVersion: portico.io/v1alpha1\nkind: BGPPeer\nmetadata: {{name: nowhere}}\n"
               f"spec: {{peerAddress: 198.18.0.5, peerASN: 64512, myASN: 64512, {nowhere}}}\n---\n"
               f"apiVersion: portico.io/v1alpha1\nkind: BGPAdvertisement\nmetadata: {{name: nowhere}}\n"
               f"spec: {{ipPools: [bgp], {nowhere}}}\n")
    lab.kubectl("apply", "-f", "-", stdin=objects)
    try:
        def condition(kind: str, name: str) -> dict[str, str] | None:
            conditions = lab.get(kind, name).get("status", {}).get("conditions", [])
            return next((c for c in conditions if c["type"] == "NodesSelected"), None)
        for kind in ("l2advertisement", "bgppeer", "bgpadvertisement"):
            found = wait_for(partial(condition, kind, "nowhere"), 20, f"NodesSelected on the {kind}")
            assert (found["status"], found["reason"]) == ("False", "NoNodeSelected"), found
        selected = wait_for(partial(condition, "bgppeer", "router-v4"), 20, "NodesSelected on router-v4")
        assert (selected["status"], selected["message"]) == ("True", "2 nodes: node-1, node-2"), selected
        assert "node-1, node-2" in lab.kubectl("get", "bgppeer", "router-v4")  # the Nodes column
        for vip in vips.values():
            assert next_hops(lab, vip) == set(NODES)
    finally:
        lab.kubectl("delete", "-f", "-", stdin=objects)
