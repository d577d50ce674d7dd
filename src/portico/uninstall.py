"""`portico uninstall`: what the chart's pre-delete hook runs, so that `helm uninstall` leaves nothing behind.

In order, each step making the next one stick:
  1. the controller goes (its Deployment deleted, its pods waited for): nothing allocates or writes status after;
  2. every Service it served loses what it wrote — addresses, conditions, finalizer — by applying nothing under
     each of its field managers (server-side apply removes what a manager owned and leaves out);
  3. every IPAllocation is deleted, and pools lose their protection finalizer (Helm, or their owner, deletes them);
  4. every agent is asked to retire (an annotation on its PorticoNode): it withdraws its VIPs, deletes its
     nftables table and its PorticoNode, and idles until its pod is deleted (agent.Agent). Nodes that do not
     answer in time are named, and their PorticoNodes deleted.
The CRDs stay (Helm never deletes its crds/): deleting them would delete objects users made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Service, ServiceStatus
from lightkube.types import PatchType

from portico.api.resources import IPAllocationResource, IPPoolResource, PorticoNodeResource
from portico.api.v1alpha1 import RETIRE_ANNOTATION
from portico.controller.annotations import FINALIZER
from portico.controller.pools import POOL_FINALIZER
from portico.controller.reports import SERVICE_CONDITIONS_MANAGER
from portico.controller.services import FIELD_MANAGER

log = logging.getLogger(__name__)

CONTROLLER = "portico-controller"
POLL_SECONDS = 0.5


async def uninstall(client: AsyncClient, namespace: str, patience: float = 60.0) -> list[str]:
    """Undo what Portico did to the cluster; the nodes whose agents did not confirm within `patience` seconds
    (empty: all did)."""
    deadline = time.monotonic() + patience
    await _stop_controller(client, namespace, deadline)
    released = 0
    async for svc in client.list(Service, namespace="*"):
        if _served(svc):
            await _release(client, svc)
            released += 1
    log.info("released %d Services", released)
    async for allocation in client.list(IPAllocationResource):
        await _ignore_missing(client.delete(IPAllocationResource, _name(allocation)))
    async for pool in client.list(IPPoolResource):
        finalizers = pool.metadata.finalizers or [] if pool.metadata else []
        if POOL_FINALIZER in finalizers:
            await _ignore_missing(client.patch(IPPoolResource, _name(pool), {"metadata": {
                "finalizers": [f for f in finalizers if f != POOL_FINALIZER]}}, patch_type=PatchType.MERGE))
    async for report in client.list(PorticoNodeResource):
        await _ignore_missing(client.patch(PorticoNodeResource, _name(report), {"metadata": {
            "annotations": {RETIRE_ANNOTATION: "true"}}}, patch_type=PatchType.MERGE))
    left = await _until_gone(client, deadline)
    for name in left:
        log.error("node %s did not confirm in time: its agent may have left its nftables table "
                  "(`nft delete table inet portico` there)", name)
        await _ignore_missing(client.delete(PorticoNodeResource, name))
    return left


async def _until_gone(client: AsyncClient, deadline: float) -> list[str]:
    """The PorticoNodes still there at the deadline (each agent deletes its own once it has retired)."""
    left = [_name(r) async for r in client.list(PorticoNodeResource)]
    while left and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
        left = [_name(r) async for r in client.list(PorticoNodeResource)]
    return left


def _name(obj: Any) -> str:
    name: str = obj.metadata.name
    return name


def _served(svc: Service) -> bool:
    conditions = svc.status.conditions if svc.status is not None else None
    return (FINALIZER in (svc.metadata.finalizers or []) if svc.metadata else False) or any(
        c.type.startswith("portico.io/") for c in conditions or [])


async def _release(client: AsyncClient, svc: Service) -> None:
    assert svc.metadata is not None and svc.metadata.name is not None
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "status": {},
                            "metadata": {"name": svc.metadata.name, "namespace": svc.metadata.namespace}}
    for manager in (SERVICE_CONDITIONS_MANAGER, FIELD_MANAGER):  # the finalizer goes with the last
        await _ignore_missing(client.patch(ServiceStatus, svc.metadata.name, body, namespace=svc.metadata.namespace,
                                           patch_type=PatchType.APPLY, field_manager=manager, force=True))


async def _stop_controller(client: AsyncClient, namespace: str, deadline: float) -> None:
    await _ignore_missing(client.delete(Deployment, CONTROLLER, namespace=namespace))
    while time.monotonic() < deadline:
        pods = [p async for p in client.list(Pod, namespace=namespace,
                                             labels={"app.kubernetes.io/name": CONTROLLER})]
        if not pods:
            return
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError("the controller's pods did not go: not releasing Services behind a running controller")


async def _ignore_missing(call: Any) -> None:
    try:
        await call
    except ApiError as e:
        if e.status.code != 404:
            raise
