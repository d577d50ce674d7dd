"""Active health at scale, on this machine: probe CPU, heartbeat bytes, detection times.

No cluster: a "node" network namespace probes a "pods" namespace over a veth pair, with the real probers and
checker (`portico.health`), and two real heartbeat meshes (`portico.announce.heartbeat`) for node death.

  1. Probe CPU of one node (the checker's own thread, user + system) at 1,000 and 10,000 local endpoints,
     interval 1 s: the half-open TCP check as shipped, HTTP at 1,000, and beside them in the same run the
     floor (the same SYNs sent and answers read from one raw socket, no bookkeeping) and a plain asyncio
     connect-per-check prober (what a straightforward implementation would do).
  2. Heartbeat bytes a node sends each second in a cluster of 100 agents (99 peers, 20 eligible VIPs): the
     real send path into a counting socket, steady and while its down set changes every second.
  3. Detection: the time from a pod's port closing to its monitor's transition (200 endpoints falling sick
     at random moments; interval 200 ms, timeout 100 ms, fall 3: budget interval x fall + 0.5 s = 1.1 s),
     and from a peer's agent being killed (-9) to this node declaring it dead (trials in a row).

    .venv/bin/python bench/health.py [--seconds 8] [--trials 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from portico.announce.heartbeat import HeartbeatMesh, Peer
from portico.dev.netns import run_in_netns
from portico.health.checker import HealthChecker, Transition
from portico.health.checks import Check, Target
from portico.health.probers import PROBE_PORTS, _attach, _port_filter, syn_segment

NODE_NS, PODS_NS = "bh-node", "bh-pods"
NODE_IP = "198.19.200.254"
POD_IPS = [f"198.19.200.{i}" for i in range(1, 41)]  # 40 pods
PORTS = list(range(20000, 20250))  # 250 ports on each: 10,000 endpoints
SICK_PORTS = list(range(21000, 21200))
KEY = b"bench-health-key-0123456789abcdef"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


@contextlib.contextmanager
def namespaces() -> Iterator[None]:
    sh("ip", "netns", "add", NODE_NS)
    sh("ip", "netns", "add", PODS_NS)
    try:
        sh("ip", "-n", NODE_NS, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", PODS_NS)
        for ns, dev in ((NODE_NS, "veth0"), (PODS_NS, "eth0")):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", NODE_NS, "addr", "add", f"{NODE_IP}/24", "dev", "veth0")
        for ip in POD_IPS:
            sh("ip", "-n", PODS_NS, "addr", "add", f"{ip}/24", "dev", "eth0")
        yield
    finally:
        for ns in (PODS_NS, NODE_NS):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                                  check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], check=False)


LISTENERS = """
import socket, sys, time, json
ports = [int(p) for p in sys.argv[1].split(",")]
socks = {}
for port in ports:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096); socks[port] = s
print("ready", flush=True)
schedule = json.loads(sys.stdin.readline() or "{}")  # port -> epoch to close at
closed = {}
for port, at in sorted(schedule.items(), key=lambda kv: kv[1]):
    time.sleep(max(0.0, at - time.time()))
    socks.pop(int(port)).close(); closed[port] = time.time()
print(json.dumps(closed), flush=True)
time.sleep(3600)
"""


def listeners(ports: list[int]) -> subprocess.Popen[str]:
    """Listening sockets in the pods namespace (the kernel answers SYNs; nothing ever accepts)."""
    proc = subprocess.Popen(["ip", "netns", "exec", PODS_NS, sys.executable, "-c", LISTENERS,
                             ",".join(map(str, ports))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def targets(n: int, ports: list[int] = PORTS) -> list[Target]:
    pairs = [(ip, port) for port in ports for ip in POD_IPS][:n]
    return [Target("bench/web", ipaddress.ip_address(ip), port, port) for ip, port in pairs]


# -- 1. probe CPU ---------------------------------------------------------------------------------------
def probe_cpu(kind: str, n: int, seconds: float) -> tuple[float, int]:
    """(cores used by the checker's thread, probes started) over `seconds` after a 2 s warm-up."""
    async def main() -> tuple[float, int]:
        check = Check(type=kind, interval=1.0, timeout=0.5, rise=2, fall=3)
        checker = HealthChecker(lambda t: None)
        checker.set_service("bench/web", check, targets(n))
        task = asyncio.create_task(checker.run())
        await asyncio.sleep(2)
        cpu, probes = time.thread_time(), checker.probes
        await asyncio.sleep(seconds)
        used, started = time.thread_time() - cpu, checker.probes - probes
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return used / seconds, started
    return run_in_netns(NODE_NS, main)


def floor_cpu(n: int, seconds: float) -> float:
    """The floor: the same SYNs from one raw socket and their answers read, with no bookkeeping at all."""
    async def main() -> float:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_TCP)
        _attach(sock, _port_filter(True))
        source = ipaddress.ip_address(NODE_IP)
        packets = [(syn_segment(source, t.ip, PROBE_PORTS[0] + i % 4500, t.port, 1), (str(t.ip), 0))
                   for i, t in enumerate(targets(n))]

        def drain() -> None:
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recvfrom(256)
        asyncio.get_running_loop().add_reader(sock.fileno(), drain)
        cpu, start = time.thread_time(), time.monotonic()
        ticks = int(seconds * 200)
        for tick in range(ticks):
            for packet, address in packets[tick % 200 * n // 200:(tick % 200 + 1) * n // 200]:
                sock.sendto(packet, address)
            await asyncio.sleep(max(0.0, start + (tick + 1) / 200 - time.monotonic()))
        used = time.thread_time() - cpu
        sock.close()
        return used / seconds
    return run_in_netns(NODE_NS, main)


def naive_cpu(n: int, seconds: float) -> float:
    """The same schedule with asyncio.open_connection per check (connect, then close)."""
    async def main() -> float:
        pairs = [(str(t.ip), t.port) for t in targets(n)]

        async def check(ip: str, port: int) -> None:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(0.5):
                    _, writer = await asyncio.open_connection(ip, port)
                    writer.close()

        async def tick_forever() -> None:
            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            i = 0
            while True:
                for ip, port in pairs[i * n // 100:(i + 1) * n // 100]:  # a hundredth of them every 10 ms
                    t = asyncio.create_task(check(ip, port))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                i = (i + 1) % 100
                await asyncio.sleep(max(0.0, start + 0.01 - time.monotonic()))
                start += 0.01
        task = asyncio.create_task(tick_forever())
        await asyncio.sleep(2)
        cpu = time.thread_time()
        await asyncio.sleep(seconds)
        used = time.thread_time() - cpu
        task.cancel()
        return used / seconds
    return run_in_netns(NODE_NS, main)


# -- 2. heartbeat bytes -------------------------------------------------------------------------------------
class CountingSocket:
    def __init__(self) -> None:
        self.bytes = self.datagrams = 0

    def sendto(self, data: bytes, address: object) -> None:
        self.bytes += len(data) + 28  # IPv4 + UDP headers
        self.datagrams += 1


def heartbeat_bytes(peers: int, down_endpoints: int, changes_per_second: int) -> tuple[float, float]:
    """(bytes/s, datagrams/s) one node sends: 10 beats a second to each peer; its down set changes
    `changes_per_second` times a second and each peer acknowledges after one beat."""
    async def main() -> tuple[float, float]:
        mesh = HeartbeatMesh("node-000", lambda peer, what: None)
        mesh.keys = (KEY,)
        mesh.address = ipaddress.ip_address("198.18.0.1")
        mesh.eligible = frozenset(ipaddress.ip_address(f"198.18.100.{i}") for i in range(20))
        for i in range(1, peers + 1):
            mesh.peers[f"node-{i:03}"] = Peer(ipaddress.ip_address(f"198.18.{1 + i // 250}.{i % 250 + 1}"))
        if down_endpoints and not changes_per_second:  # down before we count, and already acknowledged
            mesh.set_down({"default/web": frozenset((ipaddress.ip_address(f"198.19.0.{i + 1}"), 8080)
                                                    for i in range(down_endpoints))})
            for peer in mesh.peers.values():
                peer.acked = mesh.health
        counter = CountingSocket()
        mesh._sock = counter  # type: ignore[assignment]
        beats = 10 * 5  # five seconds
        for beat in range(beats):
            if changes_per_second and beat % (10 // changes_per_second) == 0:
                sick = {(ipaddress.ip_address(f"198.19.0.{(beat + i) % 250 + 1}"), 8080) for i in range(down_endpoints)}
                mesh.set_down({"default/web": frozenset(sick)} if sick else {})
            mesh._send()
            for peer in mesh.peers.values():  # each peer's next beat acknowledges
                peer.acked = mesh.health
        return counter.bytes / 5, counter.datagrams / 5
    return asyncio.run(main())


# -- 3. detection ---------------------------------------------------------------------------------------
def pod_detection(count: int) -> list[float]:
    proc = listeners(SICK_PORTS[:count])
    try:
        transitions: dict[int, float] = {}
        start = time.time() + 3.0
        schedule = {str(p): start + random.uniform(0, 2.0) for p in SICK_PORTS[:count]}

        async def main() -> None:
            check = Check(type="TCP", interval=0.2, timeout=0.1, rise=2, fall=3)

            def seen(t: Transition) -> None:
                if not t.up:
                    transitions[t.target.port] = time.time()
            checker = HealthChecker(seen)
            checker.set_service("bench/web", check, [Target("bench/web", ipaddress.ip_address(POD_IPS[0]), p, p)
                                                     for p in SICK_PORTS[:count]])
            task = asyncio.create_task(checker.run())
            await asyncio.sleep(start + 2.0 + 2.0 - time.time())
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(schedule) + "\n")
        proc.stdin.flush()
        run_in_netns(NODE_NS, main)
        closed = {int(p): t for p, t in json.loads(proc.stdout.readline()).items()}
        return [transitions[p] - closed[p] for p in closed if p in transitions]
    finally:
        proc.kill()
        proc.wait()


PEER = """
import asyncio, ipaddress, sys
from portico.announce.heartbeat import HeartbeatMesh
async def main():
    mesh = HeartbeatMesh("node-b", lambda p, w: None)
    mesh.set_peers({"node-a": (ipaddress.ip_address(sys.argv[1]), 9471)})
    mesh.set_keys((sys.argv[2].encode(),))
    mesh.set_address(ipaddress.ip_address(sys.argv[3]))
    print("up", flush=True)
    await mesh.run()
asyncio.run(main())
"""


def node_death(trials: int) -> list[float]:
    """Node death as this node's mesh sees it: the peer's agent killed at a random moment of its beat cycle."""
    peer_ip = POD_IPS[0]  # the peer "node" lives in the pods namespace
    out: list[float] = []

    async def main() -> None:
        died: list[float] = []
        alive, dead = asyncio.Event(), asyncio.Event()

        def changed(peer: str, what: str) -> None:
            if peer != "node-b":
                return
            if what.startswith("silent"):
                died.append(time.time())
                dead.set()
            elif what in ("came up", "restarted"):
                alive.set()
        mesh = HeartbeatMesh("node-a", changed)
        mesh.set_peers({"node-b": (ipaddress.ip_address(peer_ip), 9471)})
        mesh.set_keys((KEY,))
        mesh.set_address(ipaddress.ip_address(NODE_IP))
        task = asyncio.create_task(mesh.run())
        for _ in range(trials):
            alive.clear()
            dead.clear()
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", PODS_NS, sys.executable, "-c", PEER, NODE_IP, KEY.decode(), peer_ip,
                stdout=asyncio.subprocess.PIPE)
            await asyncio.wait_for(alive.wait(), 10)
            await asyncio.sleep(0.5 + random.uniform(0, 0.1))
            killed = time.time()
            proc.kill()
            await proc.wait()
            await asyncio.wait_for(dead.wait(), 5)
            out.append(died[-1] - killed)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    run_in_netns(NODE_NS, main)
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with namespaces():
        proc = listeners(PORTS)
        try:
            print("1. probe CPU of one node, interval 1 s (cores: 1.0 = one core)")
            for n in (1000, 10_000):
                syn, started = probe_cpu("TCP", n, args.seconds)
                floor = floor_cpu(n, args.seconds)
                naive = naive_cpu(n, args.seconds)
                print(f"   {n:>6} endpoints  TCP half-open {syn:6.3f} ({started / args.seconds:,.0f} probes/s)   "
                      f"floor {floor:6.3f} (x{syn / floor:.1f})   asyncio connect {naive:6.3f} "
                      f"(x{naive / syn:.1f} ours)")
        finally:
            proc.kill()
            proc.wait()
        echo = subprocess.Popen(["ip", "netns", "exec", PODS_NS, sys.executable, "-m", "portico.dev.echo", "--pod",
                                 "p", "--node", "n", *(f"--listen={p}/TCP" for p in PORTS[:25])])
        try:
            time.sleep(1.5)
            http, started = probe_cpu("HTTP", 1000, args.seconds)
            print(f"     1000 endpoints  HTTP GET {http:6.3f} ({started / args.seconds:,.0f} probes/s)")
        finally:
            echo.kill()
            echo.wait()

        print("2. heartbeat traffic one node sends, 100 agents (99 peers), 20 eligible VIPs, 10 beats/s")
        for label, down, changes in (("steady, nothing down", 0, 0), ("10 endpoints down, steady", 10, 0),
                                     ("10 down, the set changing every second", 10, 1),
                                     ("100 down, changing every second", 100, 1)):
            rate, grams = heartbeat_bytes(99, down, changes)
            print(f"   {label:<42} {rate / 1000:8.1f} kB/s  {grams:6.0f} datagrams/s")

        print("3. detection")
        pods = pod_detection(200)
        print(f"   pod sick (TCP, interval 0.2 s, fall 3, timeout 0.1 s; budget 1.1 s), {len(pods)} endpoints: "
              f"p50 {percentile(pods, 50):.3f} s  p99 {percentile(pods, 99):.3f} s  max {max(pods):.3f} s")
        deaths = node_death(args.trials)
        print(f"   node death (agent killed -9), {len(deaths)} trials: p50 {percentile(deaths, 50):.3f} s  "
              f"p99 {percentile(deaths, 99):.3f} s  max {max(deaths):.3f} s  (mean {statistics.mean(deaths):.3f})")


if __name__ == "__main__":
    main()
