"""Restart safety and racing controllers, with real controller processes against the real API server.

Peers' most reported bugs are duplicate or reshuffled IPs after a restart. These tests kill the
controller with SIGKILL in the middle of allocating, and run two controllers at once without
leader election, then check the invariants on what the API server holds.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Service

from portico.api.resources import IPAllocationResource
from portico.controller.annotations import ALLOW_SHARED_IP, LOAD_BALANCER_IPS
from portico.dev.controlplane import ControlPlaneConfig
from tests.integration.controller_helpers import Scope, wait_until

PORTICO = str(Path(sys.executable).parent / "portico")


class ControllerProcess:
    def __init__(self, config: ControlPlaneConfig, log: Path) -> None:
        self.log = log.open("ab")
        argv = [PORTICO, "controller", "--kubeconfig", str(config.admin_kubeconfig), "--no-leader-elect",
                "--log-level=DEBUG"]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()


@pytest.fixture
def controllers(controlplane: ControlPlaneConfig, portico_crds: None, tmp_path: Path) -> Iterator[list[Any]]:
    started: list[ControllerProcess] = []

    def start() -> ControllerProcess:
        c = ControllerProcess(controlplane, tmp_path / f"controller-{len(started)}.log")
        started.append(c)
        return c
    yield [start]
    for c in started:
        c.kill()


async def create_services(s: Scope, specs: list[tuple[str, dict[str, Any]]], concurrency: int = 16) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str, kwargs: dict[str, Any]) -> None:
        async with gate:
            await s.service(name, **kwargs)
    await asyncio.gather(*(one(n, k) for n, k in specs))


async def snapshot(client: AsyncClient, ns: str) -> dict[str, list[str]]:
    """Service name -> its published addresses."""
    out: dict[str, list[str]] = {}
    async for svc in client.list(Service, namespace=ns):
        lb = svc.status.loadBalancer if svc.status else None
        out[svc.metadata.name] = [i.ip for i in (lb.ingress or [])] if lb else []
    return out


async def check_invariants(client: AsyncClient, ns: str, sharing: dict[str, str] | None = None) -> dict[str, Any]:
    """Every published address is held for that Service by an IPAllocation; no address is published by two
    Services unless they share it under one key; no Service holds an allocation it does not publish."""
    sharing = sharing or {}
    published = await snapshot(client, ns)
    uids = {svc.metadata.name: svc.metadata.uid async for svc in client.list(Service, namespace=ns)}
    allocations = [a async for a in client.list(IPAllocationResource)
                   if any(o["namespace"] == ns for o in a.spec["services"])]
    held: dict[str, set[str]] = {}
    for a in allocations:
        for owner in a.spec["services"]:
            assert owner["uid"] == uids.get(owner["name"]), f"allocation {a.metadata.name} for a stale UID"
            held.setdefault(owner["name"], set()).add(a.spec["address"])
    for name, ips in published.items():
        assert set(ips) == held.get(name, set()), f"{name} publishes {ips} but holds {held.get(name)}"
    users = Counter(ip for ips in published.values() for ip in ips)
    for ip, count in users.items():
        if count > 1:
            keys = {sharing.get(n) for n, ips in published.items() if ip in ips}
            assert len(keys) == 1 and None not in keys, f"{ip} published by {count} Services without a shared key"
    return published


async def test_kill_9_while_allocating_500_keeps_every_address(client: AsyncClient, controllers: list[Any]) -> None:
    start = controllers[0]
    async with Scope(client) as s:
        await s.pool(["198.18.128.0/22"])
        await create_services(s, [(f"svc-{i:03d}", {}) for i in range(500)])
        first = start()
        await asyncio.wait_for(_watch_until_published(client, s.ns, at_least=150), 120)
        first.kill()  # a watch sees the 150th address within milliseconds: the controller is mid-way
        before = await snapshot(client, s.ns)
        had = {n: ips for n, ips in before.items() if ips}
        assert 150 <= len(had) < 500, "the kill landed mid-allocation"

        start()
        await wait_until(lambda: _count_published(client, s.ns, at_least=500), 120, "all 500 allocated")
        after = await check_invariants(client, s.ns)
        assert all(len(ips) == 1 for ips in after.values())
        assert {n: after[n] for n in had} == had  # nobody's address changed
        assert len({ips[0] for ips in after.values()}) == 500


async def _watch_until_published(client: AsyncClient, ns: str, at_least: int) -> None:
    published: set[str] = set()
    async for _, svc in client.watch(Service, namespace=ns):
        if svc.status and svc.status.loadBalancer and svc.status.loadBalancer.ingress:
            published.add(svc.metadata.name)
            if len(published) >= at_least:
                return


async def _count_published(client: AsyncClient, ns: str, at_least: int) -> bool:
    return sum(1 for ips in (await snapshot(client, ns)).values() if ips) >= at_least


@pytest.mark.parametrize("seed", [1, 2])
async def test_two_controllers_racing_never_duplicate(client: AsyncClient, controllers: list[Any],
                                                      seed: int) -> None:
    rng = random.Random(seed)
    start = controllers[0]
    async with Scope(client) as s:
        await s.pool(["198.18.132.0/24"])
        specs: list[tuple[str, dict[str, Any]]] = []
        sharing: dict[str, str] = {}
        for i in range(150):
            kwargs: dict[str, Any] = {}
            roll = rng.random()
            if roll < 0.2:  # sharers: one key, distinct ports
                kwargs = {"annotations": {ALLOW_SHARED_IP: "shared"}, "ports": [(1000 + i, "TCP")]}
                sharing[f"svc-{i:03d}"] = "shared"
            elif roll < 0.3:  # requests for a few addresses, so some collide
                kwargs = {"annotations": {LOAD_BALANCER_IPS: f"198.18.132.{200 + rng.randrange(5)}"}}
            specs.append((f"svc-{i:03d}", kwargs))
        rng.shuffle(specs)
        start()
        start()
        await create_services(s, specs, concurrency=24)
        requested = {n for n, k in specs if LOAD_BALANCER_IPS in k.get("annotations", {})}

        unserved: list[str] = []

        async def settled() -> bool:
            published = await snapshot(client, s.ns)
            unserved[:] = [n for n, ips in published.items() if not ips and n not in requested]
            return not unserved and len(published) == 150
        try:
            await wait_until(settled, 120, "every service that can be served is served")
        except AssertionError:
            raise AssertionError(f"unserved: {[(n, await s.condition(n)) for n in unserved[:5]]}") from None
        await asyncio.sleep(2)  # let the losers of any race finish releasing
        published = await check_invariants(client, s.ns, sharing)
        winners = Counter(ips[0] for n, ips in published.items() if n in requested and ips)
        assert all(count == 1 for count in winners.values())  # each requested address went to one Service
