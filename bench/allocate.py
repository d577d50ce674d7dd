"""How fast does the controller give 10,000 Services their addresses, next to bare API writes?

In one run, against one real control plane (the lab's, started here on loopback):
  bare      create N Services of type ClusterIP            -> time for N bare writes
  floor     create N LoadBalancer Services while bench/minimal_allocator.py serves them: the two writes
            per Service Portico's protocol requires and nothing else -> the least any allocator can take
  portico   the same while the controller runs (a real process)
            -> time from the first create to the last status.loadBalancer write, and the
               controller's peak RSS (VmHWM)
and prints the ratios. Every phase creates with the same client and concurrency.

    .venv/bin/python bench/allocate.py [--services 10000] [--concurrency 32] [--workers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import yaml
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Service

from portico.api.crds import rendered_crds
from portico.api.resources import IPAllocationResource, IPPoolResource
from portico.controller.annotations import LOAD_BALANCER_CLASS
from portico.dev.controlplane import ControlPlane, ControlPlaneConfig
from portico.kube.client import async_client
from portico.kube.crds import ensure_crd

PORTICO = str(Path(sys.executable).parent / "portico")
MINIMAL_ALLOCATOR = Path(__file__).parent / "minimal_allocator.py"
POOL = "198.18.128.0/18"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service(ns: str, i: int, lb: bool) -> Service:
    # No selector: the controller-manager's EndpointSlice controller (rate-limited to 20 writes/s) would
    # otherwise trail each phase by minutes and bill its tail to the next one.
    spec: dict[str, Any] = {"ports": [{"port": 80, "protocol": "TCP"}]}
    if lb:  # Portico delivers to pods directly: no NodePorts needed
        spec |= {"type": "LoadBalancer", "loadBalancerClass": LOAD_BALANCER_CLASS,
                 "allocateLoadBalancerNodePorts": False}
    return cast(Service, Service.from_dict({"metadata": {"name": f"s{i:05d}", "namespace": ns}, "spec": spec}))


async def create_all(client: AsyncClient, ns: str, n: int, lb: bool, concurrency: int) -> float:
    await client.create(Namespace(metadata=ObjectMeta(name=ns)))
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await client.create(service(ns, i, lb))
    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.monotonic() - start


async def delete_all(client: AsyncClient, resource: Any, names: list[str], concurrency: int,
                     namespace: str | None = None) -> None:
    """One DELETE per object (a deletecollection of 10k outlasts the client's timeout)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with gate:
            await client.delete(resource, name, namespace=namespace)
    await asyncio.gather(*(one(name) for name in names))


async def wait_all_published(client: AsyncClient, ns: str, n: int) -> float:
    """Watch until every Service in `ns` has an address; return the monotonic time of the last one."""
    published: set[str] = set()
    last = time.monotonic()
    async for _, svc in client.watch(Service, namespace=ns):
        lb = svc.status.loadBalancer if svc.status else None
        if lb and lb.ingress and svc.metadata.name not in published:
            published.add(svc.metadata.name)
            last = time.monotonic()
            if len(published) == n:
                return last
    return last


async def wait_all_events(client: AsyncClient, ns: str, n: int, reason: str) -> tuple[int, float]:
    """Count `reason` Events in `ns` until there are n (or 10 minutes pass); return the count and the monotonic
    time of the last one seen."""
    fields: dict[str, Any] = {"reason": reason}
    listing = client.list(Event, namespace=ns, fields=fields)
    seen = {e.metadata.name async for e in listing if e.metadata}
    last = time.monotonic()

    async def watch() -> None:
        nonlocal last
        async for kind, event in client.watch(Event, namespace=ns, fields=fields,
                                              resource_version=listing.resourceVersion):
            if kind == "ADDED" and event.metadata:
                seen.add(event.metadata.name)
                last = time.monotonic()
                if len(seen) >= n:
                    return
    if len(seen) < n:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch(), 600)
    return len(seen), last


CPU_ACCOUNTED = ("kube-apiserver", "etcd", "kube-controller")  # comm names (15 chars max)


def cpu_seconds(allocator: int | None = None) -> dict[str, float]:
    """CPU time (user + system) used so far by the processes that share the machine during a phase: the
    control plane's, the allocator's (by pid) and this script's."""
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys((*CPU_ACCOUNTED, "allocator", "bench"), 0.0)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(stat.parent.name) == os.getpid():
            used["bench"] += seconds
        elif int(stat.parent.name) == allocator:
            used["allocator"] += seconds
        elif name := next((n for n in CPU_ACCOUNTED if comm.startswith(n)), None):
            used[name] += seconds
    return used


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in before}


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def write_requests(config: ControlPlaneConfig) -> Counter[str]:
    """The API server's own count of write requests so far, by verb and resource (its /metrics)."""
    text = subprocess.run(["kubectl", "--kubeconfig", str(config.admin_kubeconfig), "get", "--raw", "/metrics"],
                          check=True, capture_output=True, text=True).stdout
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") in WRITE_VERBS:
            what = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            counts[f"{labels['verb']} {what}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def allocator_phase(client: AsyncClient, config: ControlPlaneConfig, argv: list[str], *, ns: str, n: int,
                          concurrency: int) -> dict[str, Any]:
    """Start an allocator process, create N LoadBalancer Services in `ns`, time the first create to the last
    address seen; also its CPU, peak memory and the API writes made meanwhile."""
    log = (config.state_dir / f"{ns}.log").open("wb")
    allocator = await asyncio.create_subprocess_exec(*argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        await asyncio.sleep(2)  # started and synced
        watcher = asyncio.create_task(wait_all_published(client, ns, n))
        cpu0, writes0 = cpu_seconds(allocator.pid), write_requests(config)
        start = time.monotonic()
        await asyncio.sleep(0)
        created = await create_all(client, ns, n, lb=True, concurrency=concurrency)
        last = await watcher
        result = {"created": created, "published": last - start, "rss_mb": peak_rss_mb(allocator.pid),
                  "cpu": cpu_delta(cpu0, cpu_seconds(allocator.pid)), "writes": write_requests(config) - writes0}
        if "controller" in argv:
            events, last_event = await wait_all_events(client, ns, n, "IPAllocated")
            result |= {"events": events, "last_event": last_event - start}
        return result
    finally:
        allocator.kill()
        await allocator.wait()
        log.close()


async def bench(config: ControlPlaneConfig, n: int, concurrency: int, workers: int) -> dict[str, Any]:
    client = async_client(config.admin_kubeconfig, field_manager="bench")
    for text in rendered_crds().values():
        await ensure_crd(client, yaml.safe_load(text.split("\n", 1)[1]))
    await client.create(IPPoolResource(metadata=ObjectMeta(name="bench"), spec={"addresses": [POOL]}))

    cpu0, writes0 = cpu_seconds(), write_requests(config)
    bare = await create_all(client, "bare", n, lb=False, concurrency=concurrency)
    cpu_bare, writes_bare = cpu_delta(cpu0, cpu_seconds()), write_requests(config) - writes0
    services = [f"s{i:05d}" for i in range(n)]
    await delete_all(client, Service, services, concurrency, "bare")  # give their ClusterIPs back (16k in range)

    kubeconfig = str(config.admin_kubeconfig)
    floor = await allocator_phase(client, config, [
        sys.executable, str(MINIMAL_ALLOCATOR), kubeconfig, "floor", POOL, f"--workers={workers}"],
        ns="floor", n=n, concurrency=concurrency)
    await delete_all(client, Service, services, concurrency, "floor")  # no finalizers: gone at once
    allocations = [a.metadata.name async for a in client.list(IPAllocationResource) if a.metadata and a.metadata.name]
    await delete_all(client, IPAllocationResource, allocations, concurrency)

    portico = await allocator_phase(client, config, [
        PORTICO, "controller", "--kubeconfig", kubeconfig, "--no-leader-elect", f"--workers={workers}"],
        ns="lb", n=n, concurrency=concurrency)
    await client.close()
    return {"bare": bare, "cpu_bare": cpu_bare, "writes_bare": writes_bare, "floor": floor, "portico": portico}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="portico-bench-") as tmp:
        config = ControlPlaneConfig(state_dir=Path(tmp), api_address=ipaddress.IPv4Address("127.0.0.1"),
                                    api_port=free_port(), etcd_client_port=free_port(), etcd_peer_port=free_port(),
                                    controller_manager_port=free_port())
        cp = ControlPlane(config)
        cp.start()
        try:
            r = asyncio.run(bench(config, args.services, args.concurrency, args.workers))
        finally:
            cp.stop()
    report(args.services, r)


def report(n: int, r: dict[str, Any]) -> None:
    floor, portico = r["floor"], r["portico"]
    print(f"services                           {n}")
    print(f"bare writes ({n} ClusterIP)        {r['bare']:.1f} s  ({n / r['bare']:.0f}/s)")
    print(f"floor: minimal allocator, last     {floor['published']:.1f} s  ({n / floor['published']:.0f}/s)")
    print(f"portico: last status write         {portico['published']:.1f} s  ({n / portico['published']:.0f}/s;"
          f" creates alone {portico['created']:.1f} s)")
    print(f"ratio portico / bare               {portico['published'] / r['bare']:.2f}   (goal <= 1.5;"
          f" the floor's: {floor['published'] / r['bare']:.2f})")
    print(f"ratio portico / floor              {portico['published'] / floor['published']:.2f}")
    print(f"IPAllocated Events, last one       {portico['last_event']:.1f} s  ({portico['events']} of {n}; "
          "Events yield to address writes while the controller is busy)")
    print(f"controller peak RSS                {portico['rss_mb']:.0f} MB  (goal < 300; minimal allocator "
          f"{floor['rss_mb']:.0f} MB)")
    print(f"{'CPU seconds by process':<34}{'bare':>8}{'floor':>8}{'portico':>8}")
    for name in r["cpu_bare"]:
        print(f"  {name:<32}{r['cpu_bare'][name]:8.1f}{floor['cpu'][name]:8.1f}{portico['cpu'][name]:8.1f}")
    print(f"{'API writes per Service':<34}{'bare':>8}{'floor':>8}{'portico':>8}")
    for what in sorted(r["writes_bare"].keys() | floor["writes"].keys() | portico["writes"].keys()):
        counts = (r["writes_bare"][what], floor["writes"][what], portico["writes"][what])
        if any(c / n >= 0.005 for c in counts):
            print(f"  {what:<32}" + "".join(f"{c / n:8.2f}" for c in counts))

if __name__ == "__main__":
    main()
