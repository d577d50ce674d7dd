"""Leader election on the real API server: observed-time expiry, release on stop, a warm standby."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Namespace

from portico.controller.manager import Controller
from portico.dev.controlplane import ControlPlaneConfig
from portico.kube.client import async_client
from portico.kube.leader import LeaderElector
from tests.integration.controller_helpers import Scope, wait_until

FAST = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.2}


@pytest.fixture
async def namespace(client: AsyncClient) -> AsyncIterator[str]:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    await client.create(Namespace(metadata=ObjectMeta(name=ns)))
    yield ns
    await client.delete(Namespace, ns)


def elector(client: AsyncClient, namespace: str, identity: str) -> LeaderElector:
    return LeaderElector(client, namespace=namespace, name="lease", identity=identity, **FAST)


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_lease_renewed_in_the_future_expires_by_observed_time(client: AsyncClient, namespace: str) -> None:
    """A dead leader whose clock ran an hour ahead: its renewTime stays 'fresh' for an hour by our wall clock,
    but the record has not changed for a lease duration, so the candidate takes over."""
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    await client.create(Lease(metadata=ObjectMeta(name="lease", namespace=namespace), spec=LeaseSpec(
        holderIdentity="ghost", leaseDurationSeconds=3, acquireTime=future, renewTime=future, leaseTransitions=0)))
    candidate = elector(client, namespace, "b")
    leading = asyncio.Event()

    async def lead() -> None:
        leading.set()
        await asyncio.Event().wait()

    start = asyncio.get_running_loop().time()
    task = asyncio.create_task(candidate.run(lead))
    try:
        await asyncio.wait_for(leading.wait(), 10)
        waited = asyncio.get_running_loop().time() - start
        assert 3.0 <= waited < 5.0, waited  # one lease duration of an unchanged record, not an hour
    finally:
        await _stop(task)


async def test_a_stopped_leader_releases_and_the_standby_takes_over_at_once(client: AsyncClient,
                                                                             namespace: str) -> None:
    first, second = elector(client, namespace, "a"), elector(client, namespace, "b")
    led: list[str] = []

    def lead(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def work() -> None:
            led.append(name)
            await asyncio.Event().wait()
        return work

    a = asyncio.create_task(first.run(lead("a")))
    await wait_until(_async(lambda: led == ["a"]), 10, "a leads")
    b = asyncio.create_task(second.run(lead("b")))
    await asyncio.sleep(1)
    assert led == ["a"]  # a renews: b waits
    stopped = asyncio.get_running_loop().time()
    await _stop(a)  # SIGTERM cancels the controller's task
    lease = await client.get(Lease, "lease", namespace=namespace)
    assert lease.spec is not None and lease.spec.holderIdentity in (None, "", "b")
    await wait_until(_async(lambda: led == ["a", "b"]), 10, "b leads")
    took = asyncio.get_running_loop().time() - stopped
    assert took < 1.0, f"b took {took:.2f} s (without the release it waits out the 3 s lease)"
    await _stop(b)


def _async(predicate: Callable[[], bool]) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        return predicate()
    return check


async def test_a_standby_controller_keeps_its_caches_warm(controlplane: ControlPlaneConfig, client: AsyncClient,
                                                          portico_crds: None, namespace: str) -> None:
    """While another replica holds the lease, a standby's caches follow the cluster and it writes nothing;
    given the lease, it serves what accumulated meanwhile."""
    holder = elector(client, namespace, "other-replica")
    async def forever() -> None:
        await asyncio.Event().wait()

    held = asyncio.create_task(holder.run(forever))
    ctl_client = async_client(controlplane.admin_kubeconfig, field_manager="portico-controller")
    standby = Controller(ctl_client, default_class=False, workers=2)
    standby_elector = elector(ctl_client, namespace, "standby")
    await wait_until(_async(lambda: holder.is_leader), 10, "the other replica leads")
    task = asyncio.create_task(standby.run(standby_elector.run))
    try:
        async with Scope(client) as s:
            await s.pool(["198.18.130.0/29"])
            await s.service("web")
            await wait_until(_async(lambda: f"{s.ns}/web" in standby.services.cache), 10, "the standby's cache")
            await asyncio.sleep(0.5)
            assert not standby_elector.is_leader and await s.ingress("web") == []  # it does not act
            await _stop(held)  # the leader goes away (and releases)
            assert await s.wait_ingress("web", timeout=5) == ["198.18.130.0"]
            assert standby_elector.is_leader
    finally:
        await _stop(task)
        with contextlib.suppress(ApiError):
            await ctl_client.close()
