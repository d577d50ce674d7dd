"""How long a client loses a VIP when a node announcing it fails, in layer 2 and over BGP.

In a lab of its own: examples/pool.yaml + examples/ha.yaml (an echo pod per node, ETP Local, dual-stack)
+ examples/bgp.yaml (the same pods behind a VIP the router learns from both nodes, with BFD).
Failures, each restored after its trial:
  * link down  — the node's LAN interface goes down: its pods and its rules are cut off with it;
  * agent kill — `kill -9` of the node's agent: the kernel's rules keep forwarding.
Layer 2: each trial fails the node announcing the IPv4 VIP while `portico.dev.probe` in the client sends a
datagram every 10 ms and asks who has the VIP every 10 ms, capturing every answer. Printed: the client's
longest gap without an echo, the longest ARP silence (nobody answers until a peer declares the owner dead),
and split-brain rounds (two MACs answering one question).
BGP: each trial fails node-1 while the probe, from the client's segment behind the router, runs 16 UDP
flows (the router hashes each to a node: about half are on node-1). Printed: the longest gap of any flow,
and when the router's kernel route lost node-1 (polled every 10 ms).

    .venv/bin/python bench/failover.py [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchlab import Lab, lab_of_its_own, wait_for

from portico.dev import addressing
from portico.dev.netns import agent_pid
from portico.dev.topology import link_up_commands, plan_lab

EXAMPLES = Path(__file__).parents[1] / "examples"
NODES = ("node-1", "node-2")
INTERVAL = 0.01
# Published figures (defaults, as documented or reported), for the table.
PEERS = [
    ("L2: MetalLB < 0.9 (Node NotReady + eviction)", "~5-6 min", "metallb/metallb#298"),
    ("L2: MetalLB with memberlist, untuned", "~3 s", "metallb/metallb#527"),
    ("L2: Cilium L2 announcements (lease 15 s)", "up to ~15 s", "docs.cilium.io: l2-announcements"),
    ("BGP: MetalLB / Cilium without BFD (hold time 90 s)", "up to 90 s", "BGPPeer holdTime defaults"),
    ("BGP: MetalLB FRR mode, BFDProfile defaults", "~0.9 s", "300 ms x 3, MetalLB BFDProfile docs"),
]
BGP_NODE = "node-1"  # the node failed in BGP trials (both nodes advertise; the other one carries on)


def announcer(lab: Lab, vip: str) -> str | None:
    conditions = lab.get("service", "ha").get("status", {}).get("conditions", [])
    message = next((c["message"] for c in conditions if c["type"] == "portico.io/Announced"), "")
    found = dict(re.findall(r"(\S+) by (node-\d+)", message))
    return found.get(vip)


def trial(lab: Lab, vip: str, fail: Callable[[str], None], restore: Callable[[str], None]) -> dict[str, float]:
    wait_for("both agents", lambda: all(agent_pid(n) for n in NODES), 60)
    time.sleep(2)  # a returning agent listens, then reclaims: let that settle
    owner = wait_for("an announcer", lambda: announcer(lab, vip), 60)
    client = str(addressing.client_addresses()[0])
    probe = subprocess.Popen(["ip", "netns", "exec", "portico-client", sys.executable, "-m", "portico.dev.probe", vip,
                              "--source", client, "--duration", "3", "--interval", str(INTERVAL)],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    fail(owner)
    out, _ = probe.communicate(timeout=30)
    restore(owner)
    result = json.loads(out)
    return {"gap_ms": result["max_gap_ms"], "silence_ms": result["unanswered_rounds"] * INTERVAL * 1000,
            "split": result["split_brain_rounds"]}


def link_down(node: str) -> None:
    subprocess.run(["ip", "-n", f"portico-{node}", "link", "set", "eth0", "down"], check=True)


def link_up(node: str) -> None:
    for argv in link_up_commands(plan_lab(len(NODES)).host(node)):  # with the routes the kernel dropped
        subprocess.run(argv, check=True)


def ipv4_vip(lab: Lab) -> str | None:
    ingress = lab.get("service", "ha").get("status", {}).get("loadBalancer", {}).get("ingress") or []
    return next((str(i["ip"]) for i in ingress if ":" not in i["ip"]), None)


def kill_agent(node: str) -> None:
    pid = agent_pid(node)
    if pid is not None:
        subprocess.run(["kill", "-9", str(pid)], check=True)


def next_hops(vip: str) -> set[str]:
    out = subprocess.run(["ip", "-n", "portico-router", "-j", "route", "show", vip], capture_output=True, text=True,
                         check=True).stdout
    return {h["gateway"] for r in json.loads(out or "[]") for h in r.get("nexthops", [r]) if "gateway" in h}


def bgp_trial(vip: str, fail: Callable[[str], None], restore: Callable[[str], None]) -> dict[str, float]:
    both = {str(addressing.node_addressing(i).lan_v4) for i in (1, 2)}
    wait_for("both agents", lambda: all(agent_pid(n) for n in NODES), 60)
    wait_for("both nodes in the route", lambda: next_hops(vip) == both, 120)
    client = str(addressing.client_segment_addresses()[0])
    probe = subprocess.Popen(["ip", "netns", "exec", "portico-client", sys.executable, "-m", "portico.dev.probe", vip,
                              "--source", client, "--no-arp", "--flows", "16", "--duration", "3",
                              "--interval", str(INTERVAL)], stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    failed_at = time.monotonic()
    fail(BGP_NODE)
    withdrawn = wait_for("the route to lose the node", lambda: len(next_hops(vip)) == 1 and time.monotonic(), 30,
                         interval=0.01)
    out, _ = probe.communicate(timeout=30)
    restore(BGP_NODE)
    return {"gap_ms": json.loads(out)["max_gap_ms"], "withdrawn_ms": (withdrawn - failed_at) * 1000}


def bgp_vip(lab: Lab) -> str | None:
    ingress = lab.get("service", "ha-bgp").get("status", {}).get("loadBalancer", {}).get("ingress") or []
    return next((str(i["ip"]) for i in ingress if ":" not in i["ip"]), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    failures = {"link down": (link_down, link_up), "agent kill -9": (kill_agent, lambda _: None)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in failures}
    bgp_results: dict[str, list[dict[str, float]]] = {name: [] for name in failures}
    with lab_of_its_own() as lab:
        lab.kubectl("apply", *(arg for name in ("pool", "ha", "bgp") for arg in ("-f", str(EXAMPLES / f"{name}.yaml"))))
        vip = wait_for("the IPv4 VIP", lambda: ipv4_vip(lab), 90)
        bgp = wait_for("the IPv4 BGP VIP", lambda: bgp_vip(lab), 90)
        for n in range(args.trials):
            for name, (fail, restore) in failures.items():
                results[name].append(trial(lab, vip, fail, restore))
                print(f"trial {n + 1} L2 {name}: {results[name][-1]}", file=sys.stderr)
                bgp_results[name].append(bgp_trial(bgp, fail, restore))
                print(f"trial {n + 1} BGP {name}: {bgp_results[name][-1]}", file=sys.stderr)
    print(f"\nL2 failover of {vip}, {args.trials} trials each (probe every {INTERVAL * 1000:.0f} ms):\n")
    print(f"{'failure':<16} {'gap median':>11} {'gap max':>9} {'ARP silence median':>19} {'max':>7} "
          f"{'split brain':>12}")
    for name, rows in results.items():
        gaps, silences = [r["gap_ms"] for r in rows], [r["silence_ms"] for r in rows]
        print(f"{name:<16} {statistics.median(gaps):>9.0f}ms {max(gaps):>7.0f}ms "
              f"{statistics.median(silences):>17.0f}ms {max(silences):>5.0f}ms {sum(r['split'] for r in rows):>12.0f}")
    print(f"\nBGP failover of {bgp} (ECMP over both nodes, BFD 100 ms x 3), {args.trials} trials each, "
          f"16 flows:\n")
    print(f"{'failure':<16} {'gap median':>11} {'gap max':>9} {'route withdrawn median':>23} {'max':>7}")
    for name, rows in bgp_results.items():
        gaps, withdrawn = [r["gap_ms"] for r in rows], [r["withdrawn_ms"] for r in rows]
        print(f"{name:<16} {statistics.median(gaps):>9.0f}ms {max(gaps):>7.0f}ms "
              f"{statistics.median(withdrawn):>21.0f}ms {max(withdrawn):>5.0f}ms")
    print("\npublished figures of peers (defaults):")
    for who, figure, source in PEERS:
        print(f"  {who:<52} {figure:>12}   ({source})")


if __name__ == "__main__":
    main()
