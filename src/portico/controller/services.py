"""The Service reconciler: IPAllocation objects, status and finalizer, conditions and events.

Level-triggered and idempotent: from the cached Service and the allocator's mirror of the
IPAllocations it computes what the Service should hold and makes the API say so, in an order
that is safe to interrupt anywhere (kill -9 included):

  1. IPAllocation created   (the API server's name uniqueness makes the address ours)
  2. one status write       (status.loadBalancer and our condition, with the finalizer added in the
                             same write: an address is never visible on a Service that lacks it.
                             The API server applies metadata on Service status writes -- its status
                             strategy only resets spec -- so one write does what took two.)
  3. addresses no longer wanted released (after the new ones are published)

Interrupted between 1 and 2, the allocation's owner either still exists (the next reconcile
publishes the same address) or is gone (its delete event, or the orphan sweep, releases it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Service, ServiceStatus
from lightkube.types import PatchType

from portico.api.resources import IPAllocationResource
from portico.controller.allocations import allocation_from_object
from portico.controller.annotations import FINALIZER, InvalidAnnotation
from portico.controller.conditions import same_conditions, set_condition
from portico.controller.requests import allocation_request, is_ours, service_key, sharing_profile
from portico.ipam.allocator import Allocation, Allocator, Assignment, Reason, Refusal, ServiceKey
from portico.ipam.blocks import IPAddress, allocation_name
from portico.kube.events import EventRecorder
from portico.kube.informer import object_key

log = logging.getLogger(__name__)

CONDITION = "portico.io/AddressAssigned"
FIELD_MANAGER = "portico-controller"  # owns, on Services, the addresses, this condition and the finalizer


class Conflict(Exception):
    """Our view was stale (someone else wrote first); retry after the informers catch up."""


@dataclass
class ServiceReconciler:
    client: AsyncClient
    events: EventRecorder
    allocator: Allocator
    services: Mapping[str, Service]  # informer cache, "namespace/name" -> Service
    allocation_objects: Mapping[str, Any]  # informer cache of IPAllocations, by name
    namespace_labels: Callable[[str], Mapping[str, str]]
    default_class: bool = False
    waiting: set[str] = field(default_factory=set)  # keys refused an address, retried when things change

    async def reconcile(self, key: str) -> None:
        svc = self.services.get(key)
        if svc is None:
            self.waiting.discard(key)
            await self._release_gone(key)
            return
        skey = service_key(svc)
        assert svc.metadata is not None
        if not is_ours(svc, default_class=self.default_class) or svc.metadata.deletionTimestamp is not None:
            await self._release(svc, skey)
            return
        self.allocator.profiles[skey] = sharing_profile(svc)
        try:
            request = allocation_request(svc, self.namespace_labels(skey.namespace))
        except InvalidAnnotation as e:
            await self._report(svc, reason=Reason.INVALID_ANNOTATION, message=str(e))
            return
        result = self.allocator.assign(request)
        if isinstance(result, Refusal):
            await self._report(svc, reason=result.reason, message=result.message)
            return
        await self._claim(svc, skey, request.sharing_key, result)
        await self._publish(svc, [a for a, _ in result.addresses])
        await self._release_others(skey, {a for a, _ in result.addresses})

    # -- holding addresses ---------------------------------------------------------------------------
    async def _claim(self, svc: Service, skey: ServiceKey, sharing_key: str, assignment: Assignment) -> None:
        """Make the API hold `assignment` for this Service. The new addresses are reserved in the allocator
        before the first await, so concurrent reconciles never pick them too; a failure rolls back."""
        new = [(a, p) for a, p in assignment.addresses
               if (held := self.allocator.allocations.get(a)) is None or skey not in held.owners]
        previous = {a: self.allocator.allocations.get(a) for a, _ in new}
        reserved = {a: Allocation(a, p, _owners(previous[a]) | {skey}, sharing_key) for a, p in new}
        for allocation in reserved.values():
            self.allocator.record(allocation)
        confirmed: set[IPAddress] = set()
        try:
            for address, pool in new:
                if previous[address] is None:
                    await self._create_allocation(address, pool, skey, sharing_key)
                else:
                    await self._join_allocation(address, skey, sharing_key)
                confirmed.add(address)
                self.events.record(svc, type="Normal", reason="IPAllocated",
                                   message=f"Assigned IP {address} from pool {pool}")
        except BaseException:
            for address, _ in new:
                if address in confirmed:
                    continue
                # Undo only our own reservation: the informer may have brought the truth meanwhile.
                if self.allocator.allocations.get(address) is reserved[address]:
                    before = previous[address]
                    self.allocator.record(before) if before is not None else self.allocator.forget(address)
                self._learn(address)
            raise

    def _learn(self, address: IPAddress) -> None:
        """Take the informer's word for an address (after a conflict, our mirror may lag)."""
        obj = self.allocation_objects.get(allocation_name(address))
        allocation = allocation_from_object(obj) if obj is not None else None
        if allocation is not None:
            self.allocator.record(allocation)

    async def _create_allocation(self, address: IPAddress, pool: str, skey: ServiceKey, sharing_key: str) -> None:
        name = allocation_name(address)
        obj = IPAllocationResource(metadata=ObjectMeta(name=name), spec={
            "address": str(address), "pool": pool, "services": [_ref(skey)], "sharingKey": sharing_key})
        try:
            await self.client.create(obj)
        except ApiError as e:
            if e.status.code == 409:  # another writer took it first
                raise Conflict(f"{address} was just taken") from None
            raise

    async def _join_allocation(self, address: IPAddress, skey: ServiceKey, sharing_key: str) -> None:
        """Add this Service to a shared address's owners, guarded by resourceVersion."""
        current = await self.client.get(IPAllocationResource, allocation_name(address))
        if current.spec.get("sharingKey", "") != sharing_key:
            raise Conflict(f"{address} changed hands")
        current.spec["services"] = [o for o in current.spec["services"] if o["uid"] != skey.uid] + [_ref(skey)]
        try:
            await self.client.replace(current)
        except ApiError as e:
            if e.status.code == 409:
                raise Conflict(f"{address} changed meanwhile") from None
            raise

    async def _release_others(self, skey: ServiceKey, keep: set[IPAddress]) -> None:
        for allocation in self.allocator.owned_by(skey):
            if allocation.address not in keep:
                await self._give_up(skey, allocation)

    async def _give_up(self, skey: ServiceKey, allocation: Allocation) -> None:
        name = allocation_name(allocation.address)
        rest = self.allocator.without(skey, allocation)
        try:
            if rest is None:
                await self.client.delete(IPAllocationResource, name)
                self.allocator.forget(allocation.address)
            else:
                current = await self.client.get(IPAllocationResource, name)
                current.spec["services"] = [o for o in current.spec["services"] if o["uid"] != skey.uid]
                await self.client.replace(current)
                self.allocator.record(rest)
        except ApiError as e:
            if e.status.code == 404:
                self.allocator.forget(allocation.address)
            elif e.status.code == 409:
                raise Conflict(f"{allocation.address} changed meanwhile") from None
            else:
                raise

    # -- the Service object ----------------------------------------------------------------------------
    async def _publish(self, svc: Service, addresses: list[IPAddress]) -> None:
        self.waiting.discard(object_key(svc))
        ingress = [{"ip": str(a), "ipMode": "VIP"} for a in addresses]
        shown = ", ".join(str(a) for a in addresses)
        await self._write_status(svc, ingress, ok=True, reason="Assigned", message=f"assigned {shown}")

    async def _report(self, svc: Service, *, reason: str, message: str) -> None:
        """A refusal: say why on the Service; whatever it already holds stays published."""
        self.waiting.add(object_key(svc))
        changed = await self._write_status(svc, None, ok=False, reason=reason, message=message)
        if changed:
            self.events.record(svc, type="Warning", reason="AllocationFailed", message=f"{reason}: {message}")

    async def _write_status(self, svc: Service, ingress: list[dict[str, str]] | None, *, ok: bool,
                            reason: str, message: str) -> bool:
        """Apply status (and our finalizer) if they differ; None ingress leaves the published addresses as
        they are."""
        assert svc.metadata is not None
        current = svc.status.to_dict() if svc.status is not None else {}
        old_ingress = current.get("loadBalancer", {}).get("ingress", [])
        old_conditions: list[dict[str, Any]] = current.get("conditions", [])
        conditions = set_condition(old_conditions, type=CONDITION, status=ok, reason=reason, message=message,
                                   generation=svc.metadata.generation)
        new_ingress = old_ingress if ingress is None else ingress
        has_finalizer = FINALIZER in (svc.metadata.finalizers or [])
        if has_finalizer and _same_ingress(old_ingress, new_ingress) and same_conditions(old_conditions, conditions):
            return False
        await self._apply_status(svc, ingress=new_ingress, condition=next(c for c in conditions
                                                                         if c["type"] == CONDITION))
        return True

    async def _apply_status(self, svc: Service, *, ingress: list[dict[str, Any]] | None = None,
                            condition: dict[str, Any] | None = None) -> None:
        """One server-side apply to the status subresource of what this controller owns on a Service: its
        addresses, its condition, and (whenever it holds either) its finalizer -- so an address is never
        visible on a Service that lacks the finalizer. Fields it owned and leaves out are removed; other
        writers' conditions and finalizers are never touched. (The API server takes metadata on Service status
        writes: its status strategy resets only spec.)"""
        assert svc.metadata is not None
        metadata: dict[str, Any] = {"name": svc.metadata.name, "namespace": svc.metadata.namespace}
        status: dict[str, Any] = {}
        if ingress:
            status["loadBalancer"] = {"ingress": ingress}
        if condition is not None:
            status["conditions"] = [condition]
        if status:
            metadata["finalizers"] = [FINALIZER]
        body = {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "status": status}
        try:
            await self.client.patch(ServiceStatus, svc.metadata.name or "", body, namespace=svc.metadata.namespace,
                                    patch_type=PatchType.APPLY, field_manager=FIELD_MANAGER, force=True)
        except ApiError as e:
            if e.status.code != 404:  # deleted meanwhile: nothing left to say
                raise

    # -- releasing -------------------------------------------------------------------------------------
    async def _release(self, svc: Service, skey: ServiceKey) -> None:
        """Not (or no longer) ours: give every address back, clear what we wrote, drop the finalizer."""
        assert svc.metadata is not None
        self.waiting.discard(object_key(svc))
        held = self.allocator.owned_by(skey)
        for allocation in held:
            await self._give_up(skey, allocation)
        if held:
            released = ", ".join(str(a.address) for a in held)
            self.events.record(svc, type="Normal", reason="IPReleased", message=f"Released {released}")
        current = svc.status.to_dict() if svc.status is not None else {}
        ours = any(c.get("type") == CONDITION for c in current.get("conditions", []))
        if ours or FINALIZER in (svc.metadata.finalizers or []):
            await self._apply_status(svc)  # nothing: our addresses, condition and finalizer go
        self.allocator.profiles.pop(skey, None)

    async def _release_gone(self, key: str) -> None:
        """Not in our cache, yet holding addresses: the Service was deleted without our finalizer (forced, or
        while not ours), or it is too new for our cache (another controller allocated it). Ask the API."""
        namespace, _, name = key.partition("/")
        for skey in self.allocator.holders_named(namespace, name):
            if await service_exists(self.client, skey):
                raise Conflict(f"{skey} is not in the cache yet")
            for allocation in self.allocator.owned_by(skey):
                await self._give_up(skey, allocation)
            self.allocator.profiles.pop(skey, None)


async def service_exists(client: AsyncClient, key: ServiceKey) -> bool:
    """Whether this very Service (same UID) exists, asked of the API server rather than a cache."""
    try:
        svc = await client.get(Service, key.name, namespace=key.namespace)
    except ApiError as e:
        if e.status.code == 404:
            return False
        raise
    return svc.metadata is not None and svc.metadata.uid == key.uid


def _owners(allocation: Allocation | None) -> frozenset[ServiceKey]:
    return allocation.owners if allocation is not None else frozenset()


def _ref(skey: ServiceKey) -> dict[str, str]:
    return {"namespace": skey.namespace, "name": skey.name, "uid": skey.uid}


def _same_ingress(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return [(i.get("ip"), i.get("ipMode")) for i in a] == [(i.get("ip"), i.get("ipMode")) for i in b]
