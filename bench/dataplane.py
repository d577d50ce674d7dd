"""Is the VIP path as fast as going to the pod directly, and faster than a userspace proxy?

In one run, in a lab of its own (`portico dev up` in a temporary state dir, `dev down` after): one
`portico.dev/static` pod (HAProxy answering 200 by itself, so the backend is not the bottleneck) on
node-1 behind a LoadBalancer Service, and wrk on the client host, all three paths through node-1:
  (a) direct   client -> pod IP (routed through node-1, no NAT)
  (b) VIP      client -> VIP -> node-1's nftables DNAT -> pod
  (c) HAProxy  client -> HAProxy in TCP mode on node-1 -> pod
Each path is measured --rounds times, interleaved (the machine is shared and noisy); the median round
counts. Prints requests/s and p99 latency per path and the ratios b/a and b/c (goals: >= 0.9, >= 2).

CPU placement (2 cores): by default wrk is pinned to CPU 0, standing in for the client machine, and
node-1's processes (the backend pod, HAProxy) to CPU 1, standing in for the node, so the ratios compare
what each path costs the node rather than the load generator's share of one shared pool. The kernel's
packet processing runs where a packet is sent (mostly wrk's CPU for requests, the backend's for replies)
and cannot be pinned. --no-pin lets everything share both cores.

    .venv/bin/python bench/dataplane.py [--duration 10] [--connections 32] [--rounds 3] [--close] [--no-pin]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import textwrap
import time

from benchlab import STATIC_APP, Lab, answers, lab_of_its_own, static_pod_ip, static_vip, wait_for, wrk_rate

POOL = "198.18.100.240/28"
NODE1_LAN = "198.18.0.11"  # portico.dev.addressing: node-1 on the lab LAN
PROXY_PORT = 8081
CLIENT_CPU, NODE_CPU = 0, 1
# Between runs with --close: node-1's conntrack keeps a closed flow 120 s (nf_conntrack_tcp_timeout_time_wait),
# and a VIP flow and a direct flow from the same client port share the pod-side tuple: a new run reusing the
# ports would clash with the last run's entries (its SYNs dropped, retried after 1 s) and measure that instead.
TIME_WAIT = 121
MANIFESTS = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: bench-dataplane}}
    spec: {{addresses: [{POOL}]}}
    ---
    """) + STATIC_APP
PROXY_CONFIG = """global
  maxconn 4000
defaults
  mode tcp
  timeout client 30s
  timeout server 30s
  timeout connect 5s
listen bench
  bind {node}:{port}
  server pod {pod}:8080
"""


def wrk(lab: Lab, url: str, args: argparse.Namespace) -> tuple[float, float]:
    """Requests/s and p99 latency (ms) of one wrk run from the client host."""
    extra = ["-H", "Connection: close"] if args.close else []
    pin = ["taskset", "-c", str(CLIENT_CPU)] if args.pin else []
    return wrk_rate(lab.exec_in("client", *pin, "wrk", "-t", str(args.threads), "-c", str(args.connections), "-d",
                                f"{args.duration}s", "--latency", *extra, url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the machine has 2 cores)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU placement (see above)")
    parser.add_argument("--close", action="store_true",
                        help="a new connection per request (stresses connection setup); waits out TIME_WAIT "
                             f"({TIME_WAIT}s) between runs")
    args = parser.parse_args()

    with lab_of_its_own() as lab:
        proxy: subprocess.Popen[bytes] | None = None
        try:
            lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
            pod = wait_for("the static pod", lambda: static_pod_ip(lab))
            address = wait_for("the Service's address", lambda: static_vip(lab))
            for target in (pod, address):
                lab.exec_in("client", "ip", "route", "replace", f"{target}/32", "via", NODE1_LAN)
            config = lab.state_dir / "proxy.cfg"
            config.write_text(PROXY_CONFIG.format(node=NODE1_LAN, port=PROXY_PORT, pod=pod))
            pin = ["taskset", "-c", str(NODE_CPU)] if args.pin else []
            proxy = subprocess.Popen(["ip", "netns", "exec", "portico-node-1", *pin, "haproxy", "-db", "-q", "-f",
                                      str(config)], env=lab.env)
            if args.pin:  # the backend pod's HAProxy, every thread
                for pid in lab.run("pgrep", "-f", "haproxy -db -f /dev/stdin").split():
                    lab.run("taskset", "-a", "-cp", str(NODE_CPU), pid)
            paths = {"(a) direct to the pod": f"http://{pod}:8080/", "(b) through the VIP": f"http://{address}/",
                     "(c) through HAProxy (TCP)": f"http://{NODE1_LAN}:{PROXY_PORT}/"}
            for url in paths.values():  # every path answers before anything is timed
                wait_for(url, functools.partial(answers, lab, url), 30)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
            for run, (name, url) in enumerate([p for _ in range(args.rounds) for p in paths.items()]):
                if args.close and run:
                    time.sleep(TIME_WAIT)
                results[name].append(wrk(lab, url, args))
            report(results, args)
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait()


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    mode = "a new connection per request" if args.close else "keep-alive"
    placement = f"wrk on CPU {CLIENT_CPU}, node-1's processes on CPU {NODE_CPU}" if args.pin else "no CPU pinning"
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {mode}, {placement}, median of "
          f"{args.rounds} interleaved rounds")
    print(f"{'path':<28} {'requests/s':>11} {'p99 ms':>8}   rounds (requests/s)")
    medians = {}
    for name, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        p99 = statistics.median(p for _, p in runs)
        medians[name] = rps
        print(f"{name:<28} {rps:>11.0f} {p99:>8.2f}   {', '.join(f'{r:.0f}' for r, _ in runs)}")
    a, b, c = medians.values()
    print(f"\nb/a = {b / a:.2f} (goal >= 0.9: {'met' if b / a >= 0.9 else 'NOT met'})")
    print(f"b/c = {b / c:.2f} (goal >= 2: {'met' if b / c >= 2 else 'NOT met'})")


if __name__ == "__main__":
    main()
