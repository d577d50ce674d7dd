"""How soon a deleted pod leaves rotation, and its replacement enters it: Portico next to kube-proxy.

In a lab of its own that also runs the real kube-proxy (nftables mode) on every node: examples/pool.yaml and
examples/echo.yaml (3 echo pods). Both programs watch the same EndpointSlices and program node-1's kernel;
`nft monitor` in node-1 timestamps every change as the kernel reports it, so the two are timed by one clock
in one stream. Each trial deletes one pod through the API (no kubectl start-up in the figure) and times,
from the delete request:
  * slice      — the EndpointSlice no longer lists the pod as ready (the control plane's share: the floor);
  * portico    — the pod's address gone from Portico's TCP backends map;
  * kube-proxy — the pod's address gone from kube-proxy's TCP service chain;
and, from the slice listing the replacement as ready, when each program first sends flows to it.
Prints p50/p99 of each and the ratio Portico / kube-proxy of the agent's own share (after the slice).

    .venv/bin/python bench/rotation.py [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx2 as httpx
from benchlab import lab_of_its_own, wait_for

from portico.dev import addressing
from portico.dev.controlplane import ControlPlaneConfig

EXAMPLES = Path(__file__).parents[1] / "examples"
BACKEND = re.compile(r"([\d.]+)(?: \. |/)8080")  # "pod . port" in a map, or kube-proxy's "...__pod/port" chain
LISTINGS = {"portico": ["map", "inet", "portico", "backends4_tcp"],
            "kube-proxy": ["chain", "ip", "kube-proxy", "service-{chain}-default/echo/tcp/http"]}


class Backends:
    """Who each program sends new TCP flows to in node-1's kernel, and each time an address entered and left
    that set (wall clock). Polled (each program's own listing in turn, ~10 ms a round): `nft monitor` loses
    track of Portico's maps once kube-proxy deletes its anonymous ones."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {program: set() for program in LISTINGS}
        self.changed: dict[tuple[str, str, str], list[float]] = defaultdict(list)  # (program, in/out, address)
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _list(self, what: list[str]) -> str:
        argv = ["ip", "netns", "exec", addressing.host_netns("node-1"), "nft", "list", *what]
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    def _poll(self) -> None:
        chain = None  # kube-proxy's hash of the Service port, in its chain names
        while self.running:
            for program, listing in LISTINGS.items():
                what = listing
                if program == "kube-proxy":
                    if chain is None:
                        found = re.search(r"service-(\w+)-default/echo/tcp/http", self._list(["chains", "ip"]))
                        if not found:
                            continue
                        chain = found[1]
                    what = [*listing[:3], listing[3].format(chain=chain)]
                addresses = set(BACKEND.findall(self._list(what)))
                now = time.time()
                with self.lock:
                    for address in addresses - self.sets[program]:
                        self.changed[(program, "in", address)].append(now)
                    for address in self.sets[program] - addresses:
                        self.changed[(program, "out", address)].append(now)
                    self.sets[program] = addresses

    def when(self, program: str, direction: str, address: str, since: float) -> float | None:
        with self.lock:
            return next((t for t in self.changed[(program, direction, address)] if t >= since), None)

    def stop(self) -> None:
        self.running = False
        self.thread.join()


class Slices:
    """The echo Service's EndpointSlice, watched through kubectl: each time an address became ready and
    stopped being ready (wall clock)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.ready: set[str] = set()
        self.changed: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(["kubectl", "get", "endpointslices", "-l", "kubernetes.io/service-name=echo",
                                      "-w", "--output-watch-events", "-o", "json"],
                                     stdout=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        decoder, buffered = json.JSONDecoder(), ""
        for line in self.proc.stdout:
            buffered += line
            try:
                event, _ = decoder.raw_decode(buffered)
            except ValueError:
                continue
            now, buffered = time.time(), ""
            ready = {e["addresses"][0] for e in event["object"].get("endpoints") or []
                     if e.get("conditions", {}).get("ready")}
            with self.lock:
                for address in ready - self.ready:
                    self.changed[("in", address)].append(now)
                for address in self.ready - ready:
                    self.changed[("out", address)].append(now)
                self.ready = ready

    def when(self, direction: str, address: str, since: float) -> float | None:
        with self.lock:
            return next((t for t in self.changed[(direction, address)] if t >= since), None)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def ready_pods(http: httpx.Client, api: str) -> dict[str, str]:
    pods = http.get(f"{api}/api/v1/namespaces/default/pods", params={"labelSelector": "app=echo"}).json()["items"]
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in pods
            if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))}


def times(*values: float | None) -> tuple[float, ...] | None:
    """All of them, once each is known."""
    return None if None in values else tuple(v for v in values if v is not None)


def trial(http: httpx.Client, api: str, backends: Backends, slices: Slices) -> dict[str, float]:
    pods = ready_pods(http, api)
    victim, address = sorted(pods.items())[0]
    t0 = time.time()
    http.delete(f"{api}/api/v1/namespaces/default/pods/{victim}").raise_for_status()
    out = wait_for("the pod out of both programs' rules", lambda: times(
        slices.when("out", address, t0), backends.when("portico", "out", address, t0),
        backends.when("kube-proxy", "out", address, t0)), timeout=30, interval=0.01)
    new = wait_for("a replacement ready", lambda: next(
        (ip for name, ip in ready_pods(http, api).items() if name not in pods), None), timeout=60)
    into = wait_for("the replacement in both programs' rules", lambda: times(  # its address may be reused
        slices.when("in", new, t0), backends.when("portico", "in", new, t0),
        backends.when("kube-proxy", "in", new, t0)), timeout=30, interval=0.01)
    return {"slice out": out[0] - t0, "portico out": out[1] - t0, "kube-proxy out": out[2] - t0,
            "portico in": into[1] - into[0], "kube-proxy in": into[2] - into[0]}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with lab_of_its_own(kube_proxy="nftables") as lab:
        controlplane = ControlPlaneConfig(state_dir=lab.state_dir)
        backends, slices = Backends(), Slices(lab.env)  # watching before the pods exist: no change is missed
        results = []
        try:
            lab.kubectl("apply", "-f", str(EXAMPLES / "pool.yaml"), "-f", str(EXAMPLES / "echo.yaml"))
            with httpx.Client(verify=controlplane.pki.client_tls("admin"), timeout=10) as http:
                api = controlplane.api_url
                wait_for("3 echo pods in both programs' rules", lambda: len(ready_pods(http, api)) == 3
                         and len(backends.sets["portico"]) == 3 and len(backends.sets["kube-proxy"]) == 3)
                for i in range(args.trials):
                    results.append(trial(http, api, backends, slices))
                    print(f"trial {i}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in results[-1].items()),
                          file=sys.stderr)
        finally:
            backends.stop()
            slices.stop()
    print(f"\n{len(results)} pods deleted one at a time; ms (out: from the delete request; in: from the slice "
          "listing the replacement ready)")
    print(f"{'step':<16} {'p50':>6} {'p99':>6} {'min':>6} {'max':>6}")
    for step in results[0]:
        values = [r[step] * 1000 for r in results]
        print(f"{step:<16} {percentile(values, 0.5):6.0f} {percentile(values, 0.99):6.0f} "
              f"{min(values):6.0f} {max(values):6.0f}")
    own = {program: percentile([r[f"{program} out"] - r["slice out"] for r in results], 0.5)
           for program in ("portico", "kube-proxy")}
    print(f"the programs' own share of a removal (after the slice), p50: Portico {own['portico'] * 1000:.0f} ms, "
          f"kube-proxy {own['kube-proxy'] * 1000:.0f} ms, ratio {own['portico'] / own['kube-proxy']:.2f}")


if __name__ == "__main__":
    main()
