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
Keep-alive rounds are interleaved (--rounds, the median counts); then one round of a connection per request per
path (ordered so no two runs share a pod-side conntrack tuple within TIME_WAIT). Prints requests/s and p99 per
path and the ratio c/a at keep-alive (goal >= 0.5).

CPU placement (2 cores), as bench/dataplane.py: wrk pinned to CPU 0 (the client machine), node-1's serving
processes — the backend pod and the agent's HAProxy — to CPU 1 (the node). --no-pin lets everything share.

    .venv/bin/python bench/l7.py [--duration 10] [--connections 32] [--rounds 3] [--no-pin]
"""

from __future__ import annotations

import argparse
import functools
import re
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

from benchlab import PORTICO, Lab, lab_of_its_own, wait_for

POOL = "198.18.100.240/28"  # off the LAN, unannounced: the client's routes send everything through node-1
GATEWAY_VIP = "198.18.100.250"
NODE1_LAN = "198.18.0.11"  # portico.dev.addressing: node-1 on the lab LAN
CLIENT_CPU, NODE_CPU = 0, 1
TIME_WAIT = 121  # node-1's conntrack keeps closed flows 120 s (see bench/dataplane.py)
MANIFESTS = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: bench-l7}}
    spec: {{addresses: [{POOL}]}}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {{name: static, namespace: default}}
    spec:
      replicas: 1
      selector: {{matchLabels: {{app: static}}}}
      template:
        metadata: {{labels: {{app: static}}}}
        spec:
          nodeSelector: {{kubernetes.io/hostname: node-1}}
          containers:
            - name: static
              image: portico.dev/static
              ports: [{{name: http, containerPort: 8080}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {{name: static, namespace: default}}
    spec:
      type: LoadBalancer
      allocateLoadBalancerNodePorts: false
      selector: {{app: static}}
      ports: [{{name: http, port: 80, targetPort: http}}]
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
""")


def pod_ip(lab: Lab) -> str | None:
    for pod in lab.get("pods", "-l", "app=static")["items"]:
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        if ready and pod["status"].get("podIP"):
            return str(pod["status"]["podIP"])
    return None


def vip(lab: Lab) -> str | None:
    ingress = lab.get("service", "static").get("status", {}).get("loadBalancer", {}).get("ingress") or []
    return str(ingress[0]["ip"]) if ingress else None


def answers(lab: Lab, url: str) -> bool:
    return lab.run(PORTICO, "dev", "exec", "client", "--", "curl", "-skf", "--max-time", "2", url,
                   check=False) == "ok"


def wrk(lab: Lab, url: str, args: argparse.Namespace, close: bool) -> tuple[float, float]:
    """Requests/s and p99 latency (ms) of one wrk run from the client host."""
    extra = ["-H", "Connection: close"] if close else []
    pin = ["taskset", "-c", str(CLIENT_CPU)] if args.pin else []
    out = lab.exec_in("client", *pin, "wrk", "-t", str(args.threads), "-c", str(args.connections), "-d",
                      f"{args.duration}s", "--latency", *extra, url)
    if "Socket errors" in out or "Non-2xx" in out:
        print(f"warning: {url} had errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def pin_node1(lab: Lab) -> None:
    """The backend pod's HAProxy and node-1's agent HAProxy (every thread) onto NODE_CPU."""
    for pid in lab.run("pgrep", "haproxy").split():
        netns = lab.run("ip", "netns", "identify", pid, check=False).strip()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if netns == "portico-node-1" or "haproxy -db -f /dev/stdin" in command:
            lab.run("taskset", "-a", "-cp", str(NODE_CPU), pid)


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
        lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
        pod = wait_for("the static pod", lambda: pod_ip(lab))
        address = wait_for("the Service's address", lambda: vip(lab))
        for target in (pod, address, GATEWAY_VIP):
            lab.exec_in("client", "ip", "route", "replace", f"{target}/32", "via", NODE1_LAN)
        paths = {"(a) direct to the pod": f"http://{pod}:8080/", "(b) L4 VIP": f"http://{address}/",
                 "(c) Gateway (HAProxy)": f"http://{GATEWAY_VIP}/"}
        tls = f"https://{GATEWAY_VIP}/"
        for url in [*paths.values(), tls]:  # every path answers before anything is timed
            wait_for(url, functools.partial(answers, lab, url), 60)
        if args.pin:
            pin_node1(lab)
        kept: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for name, url in [p for _ in range(args.rounds) for p in paths.items()]:
            kept[name].append(wrk(lab, url, args, close=False))
        # A connection per request: the Gateway's (HAProxy's own connections to the pod) and TLS first, then
        # direct, then — TIME_WAIT after it, as the two share pod-side tuples — the VIP.
        closed = {"(c) Gateway (HAProxy)": wrk(lab, paths["(c) Gateway (HAProxy)"], args, close=True),
                  "(d) Gateway over TLS": wrk(lab, tls, args, close=True),
                  "(a) direct to the pod": wrk(lab, paths["(a) direct to the pod"], args, close=True)}
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
    a, b, c = medians.values()
    print(f"\nc/a = {c / a:.2f} at keep-alive (goal >= 0.5: {'met' if c / a >= 0.5 else 'NOT met'}); c/b = {c / b:.2f}")


if __name__ == "__main__":
    main()
