"""IPPool status and protection, and the orphan sweep, against the real API server."""

from __future__ import annotations

from typing import Any, cast

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from portico.api.resources import IPAllocationResource, IPPoolResource
from portico.controller.pools import POOL_FINALIZER
from tests.integration.controller_helpers import Scope, wait_until

pytestmark = pytest.mark.usefixtures("controller")


async def pool_status(client: AsyncClient, name: str) -> dict[str, Any]:
    status: dict[str, Any] = cast(dict[str, Any], (await client.get(IPPoolResource, name)).status or {})
    return status


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == ctype), None)


async def test_usage_and_ready(client: AsyncClient) -> None:
    async with Scope(client) as s:
        pool = await s.pool(["198.18.120.0/29", "fd00:198:18:f20::/125"])
        await s.service("a")
        await s.service("b")
        await s.wait_ingress("b")
        async def counted() -> dict[str, Any] | None:
            st = await pool_status(client, pool)
            return st if st.get("ipv4", {}).get("used") == 2 else None
        st = await wait_until(counted, 10, "usage counted")
        assert st["ipv4"] == {"total": 8, "used": 2, "available": 6}
        assert st["ipv6"] == {"total": 8, "used": 0, "available": 8}
        ready = condition(st, "Ready")
        assert ready is not None and ready["status"] == "True"
        obj = await client.get(IPPoolResource, pool)
        assert POOL_FINALIZER in (obj.metadata.finalizers or [])


async def test_overlap_is_reported_on_both_pools(client: AsyncClient) -> None:
    async with Scope(client) as s:
        a = await s.pool(["198.18.121.0/28"])
        b = await s.pool(["198.18.121.8-198.18.121.20"])
        for name, other in ((a, b), (b, a)):
            async def conflict(name: str = name) -> dict[str, Any] | None:
                c = condition(await pool_status(client, name), "Conflict")
                return c if c and c["status"] == "True" else None
            assert other in (await wait_until(conflict, 10, f"Conflict on {name}"))["message"]


async def test_shrinking_a_pool_strands_but_never_moves(client: AsyncClient) -> None:
    async with Scope(client) as s:
        pool = await s.pool(["198.18.122.0/30"])
        for name in ("a", "b", "c"):
            await s.service(name)
            await s.wait_ingress(name)
        await client.patch(IPPoolResource, pool, {"spec": {"addresses": ["198.18.122.0/31"]}},
                           patch_type=PatchType.MERGE)
        async def stranded() -> list[str] | None:
            st = await pool_status(client, pool)
            return st.get("strandedServices") or None
        assert await wait_until(stranded, 10, "stranded services") == [f"{s.ns}/c"]
        assert await s.ingress("c") == ["198.18.122.2"]  # kept, not moved


async def test_pool_in_use_cannot_be_deleted(client: AsyncClient) -> None:
    async with Scope(client) as s:
        pool = await s.pool(["198.18.123.0/30"])
        await s.service("holder")
        await s.wait_ingress("holder")
        await client.delete(IPPoolResource, pool)
        async def blocked() -> dict[str, Any] | None:
            c = condition(await pool_status(client, pool), "Ready")
            return c if c and c["reason"] == "DeletionBlocked" else None
        cond = await wait_until(blocked, 10, "DeletionBlocked")
        assert f"{s.ns}/holder" in cond["message"]
        assert await s.ingress("holder") == ["198.18.123.0"]  # the Service keeps its address
        await s.service("newcomer")
        await s.wait_reason("newcomer", "NoMatchingPool")  # no new addresses from a pool being deleted
        await client.delete(Service, "holder", namespace=s.ns)
        await client.delete(Service, "newcomer", namespace=s.ns)
        async def gone() -> bool:
            try:
                await client.get(IPPoolResource, pool)
            except ApiError as e:
                return e.status.code == 404
            return False
        await wait_until(gone, 10, "pool deleted once unused")


async def test_orphaned_allocations_are_removed(client: AsyncClient, controller: Any) -> None:
    # An IPAllocation whose Service does not exist (deleted while the controller was down, say).
    orphan = IPAllocationResource(metadata=ObjectMeta(name="198-18-124-1"), spec={
        "address": "198.18.124.1", "pool": "whatever",
        "services": [{"namespace": "default", "name": "ghost", "uid": "00000000-dead"}]})
    await client.create(orphan)
    await wait_until(lambda: _deleted(client, "198-18-124-1"), 10, "orphan removed")
    await controller.sweep_orphans()  # the periodic safety net has nothing left to do, and does not fail


async def _deleted(client: AsyncClient, name: str) -> bool:
    try:
        await client.get(IPAllocationResource, name)
    except ApiError as e:
        return e.status.code == 404
    return False
