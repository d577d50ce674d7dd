"""Does a Gateway serve HTTP near the direct path's speed (HAProxy is the engine: is it bottlenecked by
Portico's configuration)?

In one run, in a lab of its own (`portico dev up` in a temporary state dir, `dev down` after): one
`portico.dev/static` pod (HAProxy answering 200 by itself, so the backend is not the bottleneck) on node-1, a
LoadBalancer Service for it and a Gateway (HTTP and HTTPS listeners, one HTTPRoute) in front of it, and wrk on the
client host; every path goes through node-1 (a route on the client pins it):
  (a) direct    client -> pod IP (routed through node-1, no NAT)
  (b) L4 VIP    client -> the Service's VIP -> node-1's nftables DNAT -> pod
  (c) Gateway   client -> the Gateway's VIP -> node-1's HAProxy (the agent's, from the rendered configuration)
                -> pod
  (d) Gateway over TLS, a new connection per request: TLS handshakes/s (each with one request)
  (e) bare HAProxy  client -> a HAProxy on node-1 with the least HTTP configuration (one frontend, one server)
                -> pod: the engine without Portico's configuration
  (f) bare HAProxy + access log: (e) logging each request to a file as the agent's HAProxy does by default (on
                its stdout), so f/e is what the access log costs and c/f what the rest of Portico's configuration
                does
Keep-alive rounds are interleaved (--rounds, the median counts); then one round of a connection per request per
path (ordered so no two runs share a pod-side conntrack tuple within TIME_WAIT). Prints requests/s and p99 per
path, the ratio c/a at keep-alive (goal >= 0.5) and c/e.

CPU placement (2 cores), as bench/dataplane.py: wrk pinned to CPU 0 (the client machine), node-1's serving
processes — the backend pod, the agent (so the HAProxy it starts) and the bare HAProxies — to CPU 1 (the node), each
HAProxy with one thread, as HAProxy runs on a one-core node (it starts a thread per CPU it may run on; started
unpinned and pinned after, two threads would share the one core). --no-pin lets everything share, with a thread
per CPU. Either way each bare HAProxy runs in a CPU cgroup of its own, as the containers do (own_cpu_cgroup).

    .venv/bin/python bench/l7.py [--duration 10] [--connections 32] [--rounds 3] [--no-pin]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

from benchlab import Lab, answers, lab_of_its_own, static_app, static_pod_ip, static_vip, wait_for, wrk_rate

from portico.dataplane.haproxy import ACCESS_LOG, ACCESS_LOG_DEFAULTS

POOL = "198.18.100.240/28"  # off the LAN, unannounced: the client's routes send everything through node-1
GATEWAY_VIP = "198.18.100.250"
NODE1_LAN = "198.18.0.11"  # portico.dev.addressing: node-1 on the lab LAN
CLIENT_CPU, NODE_CPU = 0, 1
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
TIME_WAIT = 121  # node-1's conntrack keeps closed flows 120 s (see bench/dataplane.py)
BARE_PORT, LOGGING_PORT = 8081, 8082
BARE_CONFIG = """global
  maxconn 4000
{log}
defaults
  mode http
  option http-keep-alive
{log_defaults}
  timeout client 30s
  timeout server 30s
  timeout connect 5s
frontend bare
  bind {node}:{port}
  default_backend pod
backend pod
  server pod {pod}:8080
"""
GATEWAY = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: bench-l7}}
    spec: {{addresses: [{POOL}]}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: GatewayClass
    metadata: {{name: portico}}
    spec: {{controllerName: portico.io/gateway-controller}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {{name: bench, namespace: default}}
    spec:
      gatewayClassName: portico
      addresses: [{{value: {GATEWAY_VIP}}}]
      listeners:
        - {{name: http, port: 80, protocol: HTTP}}
        - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: bench-tls}}]}}}}
    ---
    apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {{name: static, namespace: default}}
    spec:
      parentRefs: [{{name: bench}}]
      rules: [{{backendRefs: [{{name: static, port: 80}}]}}]
    ---
""")


def wrk(lab: Lab, url: str, args: argparse.Namespace, close: bool) -> tuple[float, float]:
    """Requests/s and p99 latency (ms) of one wrk run from the client host."""
    extra = ["-H", "Connection: close"] if close else []
    pin = ["taskset", "-c", str(CLIENT_CPU)] if args.pin else []
    out = lab.exec_in("client", *pin, "wrk", "-t", str(args.threads), "-c", str(args.connections), "-d",
                      f"{args.duration}s", "--latency", *extra, url)
    if "Socket errors" in out or "Non-2xx" in out:
        print(f"warning: {url} had errors:\n{out}")
    return wrk_rate(out)


def pin_node1_agent(lab: Lab) -> None:
    """node-1's agent (every thread) onto NODE_CPU, before it starts HAProxy: HAProxy then runs one thread."""
    for pid in lab.run("pgrep", "-f", "portico agent").split():
        if lab.run("ip", "netns", "identify", pid, check=False).strip() == "portico-node-1":
            lab.run("taskset", "-a", "-cp", str(NODE_CPU), pid)


def pin_node1(lab: Lab) -> None:
    """The backend pod's HAProxy, node-1's agent HAProxy and the bare ones (every thread) onto NODE_CPU."""
    for pid in lab.run("pgrep", "haproxy").split():
        netns = lab.run("ip", "netns", "identify", pid, check=False).strip()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if netns == "portico-node-1" or "haproxy -db -f /dev/stdin" in command:
            lab.run("taskset", "-a", "-cp", str(NODE_CPU), pid)


def own_cpu_cgroup(name: str, pid: int) -> Path:
    """Move a bare HAProxy (every thread) into a CPU cgroup of its own, as runc puts each container — the agent's,
    so its HAProxy, and the backend pod — in one: the scheduler shares a busy CPU between groups, so the bare and the
    agent's HAProxy now compete on the same terms (--no-pin's c/e was 0.59 without this and 0.55 with it: the
    scheduler is not what makes the agent's HAProxy slower there; docs/benchmarks.md)."""
    root = CGROUP_CPU if CGROUP_CPU.is_dir() else CGROUP_CPU.parent  # cgroup v1's cpu hierarchy, else v2's
    group = root / name
    group.mkdir(exist_ok=True)
    (group / "cgroup.procs").write_text(str(pid))
    return group


def certificate(lab: Lab) -> None:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-subj", "/CN=bench.example", "-days", "1", "-keyout", f"{d}/k", "-out",
                        f"{d}/c"], check=True, capture_output=True)
        lab.kubectl("create", "secret", "tls", "bench-tls", f"--cert={d}/c", f"--key={d}/k")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the machine has 2 cores)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU placement (see above)")
    args = parser.parse_args()

    with lab_of_its_own() as lab:
        certificate(lab)
        if args.pin:
            pin_node1_agent(lab)
        lab.kubectl("apply", "-f", "-", stdin=GATEWAY + static_app(1 if args.pin else None))
        pod = wait_for("the static pod", lambda: static_pod_ip(lab))
        address = wait_for("the Service's address", lambda: static_vip(lab))
        for target in (pod, address, GATEWAY_VIP):
            lab.exec_in("client", "ip", "route", "replace", f"{target}/32", "via", NODE1_LAN)
        bares, groups = [], []
        for port, log in ((BARE_PORT, False), (LOGGING_PORT, True)):
            config = lab.state_dir / f"bare-{port}.cfg"
            config.write_text(BARE_CONFIG.format(node=NODE1_LAN, port=port, pod=pod, log=ACCESS_LOG if log else "",
                                                 log_defaults=ACCESS_LOG_DEFAULTS if log else ""))
            with (lab.state_dir / f"bare-{port}.log").open("wb") as out:
                pin = ["taskset", "-c", str(NODE_CPU)] if args.pin else []
                bares.append(subprocess.Popen(["ip", "netns", "exec", "portico-node-1", *pin, "haproxy", "-db", "-q",
                                               "-f", str(config)], stdout=out))
            groups.append(own_cpu_cgroup(f"portico-bench-bare-{port}", bares[-1].pid))
        try:
            measure(lab, args, {"(a) direct to the pod": f"http://{pod}:8080/", "(b) L4 VIP": f"http://{address}/",
                                "(c) Gateway (HAProxy)": f"http://{GATEWAY_VIP}/",
                                "(e) bare HAProxy (HTTP)": f"http://{NODE1_LAN}:{BARE_PORT}/",
                                "(f) bare + access log": f"http://{NODE1_LAN}:{LOGGING_PORT}/"},
                    f"https://{GATEWAY_VIP}/")
        finally:
            for bare in bares:
                bare.terminate()
                bare.wait()
            for group in groups:
                group.rmdir()


def measure(lab: Lab, args: argparse.Namespace, paths: dict[str, str], tls: str) -> None:
    for url in [*paths.values(), tls]:  # every path answers before anything is timed
        wait_for(url, functools.partial(answers, lab, url), 60)
    if args.pin:
        pin_node1(lab)
    kept: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for name, url in [p for _ in range(args.rounds) for p in paths.items()]:
        kept[name].append(wrk(lab, url, args, close=False))
    # A connection per request: those whose pod-side flows are HAProxy's own first, then direct, then — TIME_WAIT
    # after it, as the two share pod-side tuples — the VIP.
    closed = {name: wrk(lab, url, args, close=True) for name, url in [
        *((n, u) for n, u in paths.items() if "HAProxy" in n), ("(d) Gateway over TLS", tls),
        ("(a) direct to the pod", paths["(a) direct to the pod"])]}
    time.sleep(TIME_WAIT)
    closed["(b) L4 VIP"] = wrk(lab, paths["(b) L4 VIP"], args, close=True)
    report(kept, closed, args)


def report(kept: dict[str, list[tuple[float, float]]], closed: dict[str, tuple[float, float]],
           args: argparse.Namespace) -> None:
    placement = f"wrk on CPU {CLIENT_CPU}, node-1's HAProxies on CPU {NODE_CPU}" if args.pin else "no CPU pinning"
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {placement}")
    print(f"keep-alive, median of {args.rounds} interleaved rounds")
    print(f"{'path':<26} {'requests/s':>11} {'p99 ms':>8}   rounds (requests/s)")
    medians = {}
    for name, runs in kept.items():
        medians[name] = statistics.median(r for r, _ in runs)
        p99 = statistics.median(p for _, p in runs)
        print(f"{name:<26} {medians[name]:>11.0f} {p99:>8.2f}   {', '.join(f'{r:.0f}' for r, _ in runs)}")
    print("a new connection per request, one round")
    for name in sorted(closed):
        rps, p99 = closed[name]
        print(f"{name:<26} {rps:>11.0f} {p99:>8.2f}" + ("   (TLS handshakes/s)" if "TLS" in name else ""))
    a, b, c, e, f = medians.values()
    print(f"\nc/a = {c / a:.2f} at keep-alive (goal >= 0.5: {'met' if c / a >= 0.5 else 'NOT met'}); "
          f"c/b = {c / b:.2f}; c/e = {c / e:.2f} (Portico's configuration against the least one); "
          f"f/e = {f / e:.2f} (the access log); c/f = {c / f:.2f} (the rest of Portico's configuration)")


if __name__ == "__main__":
    main()
