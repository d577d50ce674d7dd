"""A lab of the bench's own: `portico dev up` in a temporary state dir, `portico dev down` after, and the
few commands benchmarks run against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PORTICO = str(Path(sys.executable).parent / "portico")


class Lab:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.env = {**os.environ, "PORTICO_DEV_DIR": str(state_dir)}

    def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env, input=stdin, timeout=900,
                              check=False)
        if check and proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)}: {proc.stderr.strip()}")
        return proc.stdout

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.run("kubectl", *args, stdin=stdin)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def exec_in(self, host: str, *argv: str) -> str:
        return self.run(PORTICO, "dev", "exec", host, "--", *argv)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 90, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


@contextmanager
def lab_of_its_own(nodes: int = 2, kube_proxy: str | None = None) -> Iterator[Lab]:
    with tempfile.TemporaryDirectory(prefix="portico-bench-") as state_dir:
        lab = Lab(Path(state_dir))
        print(f"lab: up ({nodes} nodes)", file=sys.stderr)
        try:
            extra = ["--kube-proxy", kube_proxy] if kube_proxy else []
            lab.env["KUBECONFIG"] = lab.run(PORTICO, "dev", "up", "--nodes", str(nodes), *extra).strip()
            yield lab
        finally:
            lab.run(PORTICO, "dev", "down", check=False)


# One `portico.dev/static` pod (HAProxy answering 200 by itself, so the backend is not the bottleneck) on node-1,
# behind a LoadBalancer Service `static`: what the data-path benchmarks measure paths to.
def static_app(threads: int | None = None) -> str:
    """The `portico.dev/static` Deployment on node-1 and its LoadBalancer Service; `threads`: its HAProxy's nbthread
    (default one per CPU)."""
    args = f"\n          args: [--threads={threads}]" if threads else ""
    return """
apiVersion: apps/v1
kind: Deployment
metadata: {name: static, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: static}}
  template:
    metadata: {labels: {app: static}}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-1}
      containers:
        - name: static
          image: portico.dev/static@ARGS@
          ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: static, namespace: default}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  selector: {app: static}
  ports: [{name: http, port: 80, targetPort: http}]
""".replace("@ARGS@", args)


STATIC_APP = static_app()


def static_pod_ip(lab: Lab) -> str | None:
    for pod in lab.get("pods", "-l", "app=static")["items"]:
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
        if ready and pod["status"].get("podIP"):
            return str(pod["status"]["podIP"])
    return None


def static_vip(lab: Lab) -> str | None:
    ingress = lab.get("service", "static").get("status", {}).get("loadBalancer", {}).get("ingress") or []
    return str(ingress[0]["ip"]) if ingress else None


def answers(lab: Lab, url: str) -> bool:
    """The static pod's answer ("ok"), reached from the client (certificates not verified)."""
    return lab.run(PORTICO, "dev", "exec", "client", "--", "curl", "-skf", "--max-time", "2", url,
                   check=False) == "ok"


def wrk_rate(out: str) -> tuple[float, float]:
    """Requests/s and p99 latency (ms) from `wrk --latency`'s report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
