"""How long a client loses a VIP when its announcing node fails, in layer 2 (BGP: not yet).

In a lab of its own: examples/pool.yaml + examples/ha.yaml (an echo pod per node, ETP Local, dual-stack).
Each trial finds the node announcing the IPv4 VIP, starts `portico.dev.probe` in the client (a datagram
every 10 ms, and an ARP who-has every 10 ms with every answer captured), fails that node one second in,
and restores it after. Failures:
  * link down  — the node's LAN interface goes down: its pods and its rules are cut off with it;
  * agent kill — `kill -9` of the node's agent: the kernel's rules keep forwarding, so only ARP answers stop.
Prints per failure the client's longest gap without an echo, the longest ARP silence (the detection time:
nobody answers until a peer declares the owner dead), and split-brain rounds (two MACs answering one question).

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
    ("MetalLB < 0.9 (Node NotReady + eviction)", "~5-6 min", "metallb/metallb#298"),
    ("MetalLB with memberlist, untuned", "~3 s", "metallb/metallb#527"),
    ("Cilium L2 announcements (lease 15 s)", "up to ~15 s", "docs.cilium.io: l2-announcements"),
]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    failures = {"link down": (link_down, link_up), "agent kill -9": (kill_agent, lambda _: None)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in failures}
    with lab_of_its_own() as lab:
        lab.kubectl("apply", "-f", str(EXAMPLES / "pool.yaml"), "-f", str(EXAMPLES / "ha.yaml"))
        vip = wait_for("the IPv4 VIP", lambda: ipv4_vip(lab), 90)
        for n in range(args.trials):
            for name, (fail, restore) in failures.items():
                results[name].append(trial(lab, vip, fail, restore))
                print(f"trial {n + 1} {name}: {results[name][-1]}", file=sys.stderr)
    print(f"\nL2 failover of {vip}, {args.trials} trials each (probe every {INTERVAL * 1000:.0f} ms):\n")
    print(f"{'failure':<16} {'gap median':>11} {'gap max':>9} {'ARP silence median':>19} {'max':>7} "
          f"{'split brain':>12}")
    for name, rows in results.items():
        gaps, silences = [r["gap_ms"] for r in rows], [r["silence_ms"] for r in rows]
        print(f"{name:<16} {statistics.median(gaps):>9.0f}ms {max(gaps):>7.0f}ms "
              f"{statistics.median(silences):>17.0f}ms {max(silences):>5.0f}ms {sum(r['split'] for r in rows):>12.0f}")
    print("\npublished figures of peers (defaults):")
    for who, figure, source in PEERS:
        print(f"  {who:<44} {figure:>12}   ({source})")


if __name__ == "__main__":
    main()
