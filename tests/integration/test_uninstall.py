"""`portico uninstall` (the chart's pre-delete hook) against the real API server: what the controller and agents
left is undone, and nothing else is touched. (With real agents in the lab: tests/e2e/test_chart.py.)"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import ServicePort, ServiceSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Service, ServiceStatus
from lightkube.types import PatchType

from portico.api.resources import IPAllocationResource, IPPoolResource, PorticoNodeResource
from portico.controller.annotations import FINALIZER
from portico.controller.pools import POOL_FINALIZER
from portico.controller.reports import SERVICE_CONDITIONS_MANAGER
from portico.controller.services import CONDITION, FIELD_MANAGER
from portico.uninstall import uninstall

NOW = "2026-12-02T00:00:00Z"


@pytest.fixture
async def namespace(client: AsyncClient, portico_crds: None) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    await client.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    await client.delete(Namespace, name)


async def service(client: AsyncClient, namespace: str, name: str, *, finalizers: list[str] | None = None) -> None:
    await client.create(Service(metadata=ObjectMeta(name=name, namespace=namespace, finalizers=finalizers),
                                spec=ServiceSpec(type="LoadBalancer", allocateLoadBalancerNodePorts=False,
                                                 ports=[ServicePort(port=80)])))


async def as_the_controller(client: AsyncClient, namespace: str, name: str) -> None:
    """What the controller and its reports write on a Service it serves, as they write it (server-side apply)."""
    def body(status: dict[str, Any], **metadata: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "status": status,
                "metadata": {"name": name, "namespace": namespace, **metadata}}
    condition = {"status": "True", "reason": "Allocated", "message": "", "lastTransitionTime": NOW}
    await client.patch(ServiceStatus, name, body({"loadBalancer": {"ingress": [{"ip": "198.18.100.9"}]},
                                                  "conditions": [{"type": CONDITION, **condition}]},
                                                 finalizers=[FINALIZER]),
                       namespace=namespace, patch_type=PatchType.APPLY, field_manager=FIELD_MANAGER, force=True)
    await client.patch(ServiceStatus, name, body({"conditions": [{"type": "portico.io/Announced", **condition}]}),
                       namespace=namespace, patch_type=PatchType.APPLY, field_manager=SERVICE_CONDITIONS_MANAGER,
                       force=True)


async def test_uninstall_releases_services_and_removes_portico_objects_only(client: AsyncClient,
                                                                           namespace: str) -> None:
    await service(client, namespace, "served")
    await as_the_controller(client, namespace, "served")
    await service(client, namespace, "other", finalizers=["example.com/keep"])  # someone else's
    pool = f"pool-{uuid.uuid4().hex[:8]}"
    await client.create(IPPoolResource(metadata=ObjectMeta(name=pool, finalizers=[POOL_FINALIZER]),
                                       spec={"addresses": ["198.18.100.0/28"]}))
    await client.create(IPAllocationResource(metadata=ObjectMeta(name="198-18-100-9"), spec={
        "address": "198.18.100.9", "pool": pool, "services": [{"namespace": namespace, "name": "served", "uid": "u"}]}))
    await client.create(PorticoNodeResource(metadata=ObjectMeta(name="gone-node")))  # no agent will answer
    try:
        left = await uninstall(client, namespace, patience=1.0)

        assert left == ["gone-node"]  # named, and its PorticoNode deleted anyway
        served = await client.get(Service, "served", namespace=namespace)
        assert served.status is not None and not (served.status.loadBalancer and served.status.loadBalancer.ingress)
        assert not [c for c in served.status.conditions or [] if c.type.startswith("portico.io/")]
        assert served.metadata is not None and FINALIZER not in (served.metadata.finalizers or [])
        other = await client.get(Service, "other", namespace=namespace)
        assert other.metadata is not None and other.metadata.finalizers == ["example.com/keep"]
        assert [a async for a in client.list(IPAllocationResource)] == []
        assert [n async for n in client.list(PorticoNodeResource)] == []
        kept = await client.get(IPPoolResource, pool)  # the pool stays (users' objects do), unprotected
        assert kept.metadata is not None and POOL_FINALIZER not in (kept.metadata.finalizers or [])
    finally:
        await client.patch(Service, "other", {"metadata": {"finalizers": []}}, namespace=namespace,
                           patch_type=PatchType.MERGE)
        for svc in ("served", "other"):
            await client.delete(Service, svc, namespace=namespace)
        await client.delete(IPPoolResource, pool)
        with contextlib.suppress(ApiError):  # deleted by the test, unless it failed first
            await client.delete(IPAllocationResource, "198-18-100-9")
