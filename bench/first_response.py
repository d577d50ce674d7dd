"""Time to first response: from creating a LoadBalancer Service to the first answer through its announced VIP.

In a lab of its own (2 nodes, examples/pool.yaml: layer 2 on the LAN, an echo Deployment), Services are
created one at a time through the API (no kubectl start-up in the figure), and each step is timed from the
create request:
  * address   — `status.loadBalancer.ingress` set (the controller allocated; the bench watches the Service);
  * rules     — the VIP's frontend in a node's nftables table (`nft monitor` on every node, timestamped);
  * announced — the first ARP reply or gratuitous ARP for the VIP seen on the client's LAN interface;
  * answered  — the first UDP echo through the VIP to a client sending a datagram every 5 ms from the moment
                the address is known (through the client's own kernel: its ARP resolution is in the figure).
Prints p50/p99 of each step over all Services, and the per-step split of the median.

    .venv/bin/python bench/first_response.py [--services 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
from benchlab import lab_of_its_own, wait_for

from portico.dev import addressing
from portico.dev.controlplane import ControlPlaneConfig

EXAMPLES = Path(__file__).parents[1] / "examples"
NODES = ("node-1", "node-2")

# In the client: sniff ARP replies for the VIP and send a datagram every 5 ms until one is echoed; print the wall
# clock of the first ARP reply and of the first echo.
CLIENT = """
import json, socket, sys, time, select
arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)); arp.bind(("eth0", 0x0806))
replies = {}  # address -> when an ARP frame from it (a reply or a gratuitous ARP) was first seen
def drain(timeout):
    for s in select.select([arp], [], [], timeout)[0]:
        frame = arp.recv(2048)  # a reply, or a gratuitous ARP (a request): either way, sent by the address's owner
        replies.setdefault(socket.inet_ntoa(frame[28:32]), time.time())
print("ready", flush=True)
line = ""
while not line:  # listening already, before the Service exists: nothing announced is missed
    drain(0.002)
    if select.select([sys.stdin], [], [], 0)[0]:
        line = sys.stdin.readline().strip()
vip, deadline = line, time.time() + 10
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.setblocking(False)
first_echo, next_send = None, 0.0
while time.time() < deadline and first_echo is None:
    now = time.time()
    if now >= next_send:
        try:
            udp.sendto(b"x", (vip, 9090))
        except OSError:
            pass
        next_send = now + 0.005
    drain(0.0)
    if select.select([udp], [], [], 0.002)[0]:
        try:
            udp.recv(4096); first_echo = time.time()
        except OSError:
            pass
print(json.dumps({"arp": replies.get(vip), "echo": first_echo}), flush=True)
"""


def service(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False, "selector": {"app": "echo"},
                     "ipFamilies": ["IPv4"], "ports": [{"name": "udp", "port": 9090, "targetPort": "udp",
                                                        "protocol": "UDP"}]}}


class RuleWatch:
    """`nft monitor` on each node: when each VIP's frontend element first appeared (wall clock)."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.procs = [subprocess.Popen(["ip", "netns", "exec", addressing.host_netns(node), "nft", "monitor"],
                                       stdout=subprocess.PIPE, text=True) for node in NODES]
        for proc in self.procs:
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("add element inet portico frontends4"):
                now = time.time()
                for part in line.split("{", 1)[1].split(","):
                    self.seen.setdefault(part.strip().split(" ", 1)[0], now)

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def measure_one(http: httpx.Client, api: str, name: str, rules: RuleWatch) -> dict[str, float]:
    client = subprocess.Popen(["ip", "netns", "exec", addressing.host_netns("client"), sys.executable, "-c", CLIENT],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdin is not None and client.stdout is not None
    assert client.stdout.readline().strip() == "ready"
    t0 = time.time()
    http.post(f"{api}/api/v1/namespaces/default/services", json=service(name)).raise_for_status()
    vip = None
    while vip is None:
        ingress = http.get(f"{api}/api/v1/namespaces/default/services/{name}").json().get("status", {}).get(
            "loadBalancer", {}).get("ingress")
        vip = ingress[0]["ip"] if ingress else None
        if vip is None:
            time.sleep(0.005)
    t_address = time.time()
    out, _ = client.communicate(f"{vip}\n", timeout=30)
    seen = json.loads(out)
    if seen["echo"] is None:
        raise SystemExit(f"{name} ({vip}): no answer within 10 s")
    return {"address": t_address - t0, "rules": rules.seen.get(vip, float("nan")) - t0,
            "announced": (seen["arp"] or float("nan")) - t0, "answered": seen["echo"] - t0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=20)
    args = parser.parse_args()
    with lab_of_its_own() as lab:
        lab.kubectl("apply", "-f", str(EXAMPLES / "pool.yaml"), "-f", str(EXAMPLES / "echo.yaml"))
        lab.kubectl("delete", "service", "echo")  # only the bench's Services use the pool
        wait_for("3 echo pods ready", lambda: len([p for p in lab.get("pods", "-l", "app=echo")["items"] if any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]) == 3)
        controlplane = ControlPlaneConfig(state_dir=lab.state_dir)
        pki, api = controlplane.pki, controlplane.api_url
        rules = RuleWatch()
        results = []
        try:
            with httpx.Client(verify=pki.client_tls("admin"), timeout=10) as http:
                for i in range(args.services):
                    result = measure_one(http, api, f"fr-{i}", rules)
                    results.append(result)
                    print(f"fr-{i}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in result.items()),
                          file=sys.stderr)
                    time.sleep(0.5)  # one at a time: the previous one's after-effects settle
        finally:
            rules.stop()
        print(f"\n{len(results)} Services created one at a time; ms from the create request")
        print(f"{'step':<10} {'p50':>6} {'p99':>6} {'min':>6} {'max':>6}")
        for step in ("address", "rules", "announced", "answered"):
            values = [r[step] * 1000 for r in results if r[step] == r[step]]
            print(f"{step:<10} {percentile(values, 0.5):6.0f} {percentile(values, 0.99):6.0f} "
                  f"{min(values):6.0f} {max(values):6.0f}")
        medians = {s: statistics.median(r[s] for r in results if r[s] == r[s]) * 1000
                   for s in ("address", "rules", "announced", "answered")}
        print(f"split of the median: allocation {medians['address']:.0f} ms, agent sync +"
              f"{medians['rules'] - medians['address']:.0f} ms, layer-2 claim +"
              f"{medians['announced'] - medians['rules']:.0f} ms, client +"
              f"{medians['answered'] - medians['announced']:.0f} ms")


if __name__ == "__main__":
    main()
