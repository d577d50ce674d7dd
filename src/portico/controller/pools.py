"""The IPPool reconciler: validity, overlaps, usage, stranded Services, deletion protection."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType

from portico.api.resources import IPPoolResource, decode
from portico.api.v1alpha1 import IPPoolSpec
from portico.controller.conditions import same_conditions, set_condition
from portico.ipam.allocator import Allocator
from portico.ipam.pools import InvalidPool, Pool, overlapping_pools, pool_from_spec
from portico.kube.events import EventRecorder

log = logging.getLogger(__name__)

POOL_FINALIZER = "portico.io/pool-protection"
MAX_LISTED = 10  # Services named in a message before "and N more"


def parse_pool(obj: Any) -> Pool | str:
    """The pool, or why it is invalid (what CEL cannot see: overlaps within it, reversed ranges)."""
    try:
        return pool_from_spec(obj.metadata.name, decode(obj.spec, IPPoolSpec))
    except (InvalidPool, msgspec.ValidationError) as e:
        return str(e)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


@dataclass
class PoolReconciler:
    client: AsyncClient
    events: EventRecorder
    allocator: Allocator
    pools: Mapping[str, Any]  # informer cache of IPPool objects

    def sync_allocator(self) -> None:
        """Give the allocator every valid pool not being deleted (no new addresses from those)."""
        for name, obj in self.pools.items():
            parsed = parse_pool(obj)
            if isinstance(parsed, Pool) and obj.metadata.deletionTimestamp is None:
                self.allocator.set_pool(parsed)
            else:
                self.allocator.remove_pool(name)
        for name in [n for n in self.allocator.pools if n not in self.pools]:
            self.allocator.remove_pool(name)

    async def reconcile(self, name: str) -> None:
        obj = self.pools.get(name)
        if obj is None:
            return
        mine = [a for a in self.allocator.allocations.values() if a.pool == name]
        holders = sorted({str(o) for a in mine for o in a.owners})
        finalizers = list(obj.metadata.finalizers or [])
        if obj.metadata.deletionTimestamp is not None:
            if not holders:
                if POOL_FINALIZER in finalizers:
                    await self._patch(name, {"metadata": {"finalizers": [f for f in finalizers
                                                                         if f != POOL_FINALIZER]}})
                return
            message = f"{len(holders)} Service(s) still hold addresses: {_listing(holders)}"
            if await self._status(obj, [("Ready", False, "DeletionBlocked", message)], []):
                self.events.record(obj, type="Warning", reason="DeletionBlocked", message=message)
            return
        if POOL_FINALIZER not in finalizers:
            await self._patch(name, {"metadata": {"finalizers": [*finalizers, POOL_FINALIZER]}})

        parsed = parse_pool(obj)
        if isinstance(parsed, str):
            await self._status(obj, [("Ready", False, "InvalidAddresses", parsed)], [])
            return
        valid = [p for p in (parse_pool(o) for o in self.pools.values()) if isinstance(p, Pool)]
        others = overlapping_pools(valid).get(name, [])
        inside = [a for a in mine if a.address in parsed]
        stranded = sorted({str(o) for a in mine if a.address not in parsed for o in a.owners})
        conditions = [
            ("Ready", True, "Ready", f"{len(holders)} Service(s) hold addresses from this pool"),
            ("Conflict", bool(others), "Overlap" if others else "NoOverlap",
             f"overlaps IPPool {', '.join(others)}" if others else "no other pool shares an address"),
            ("Stranded", bool(stranded), "OutsidePool" if stranded else "NoneOutside",
             f"keeping addresses no longer in spec.addresses for {_listing(stranded)}; they are not moved"
             if stranded else "every allocation is inside spec.addresses"),
        ]
        usage = {}
        for family in (4, 6):
            if family in parsed.families:
                used = sum(1 for a in inside if a.address.version == family)
                total = parsed.total(family)
                usage[f"ipv{family}"] = {"total": total, "used": used, "available": max(total - used, 0)}
        changed = await self._status(obj, conditions, stranded, usage)
        if changed and others:
            self.events.record(obj, type="Warning", reason="Conflict", message=f"overlaps IPPool {', '.join(others)}")

    async def _status(self, obj: Any, conditions: list[tuple[str, bool, str, str]], stranded: list[str],
                      usage: dict[str, Any] | None = None) -> bool:
        current = dict(obj.status or {})
        old_conditions: list[dict[str, Any]] = current.get("conditions", [])
        new_conditions = old_conditions
        for ctype, ok, reason, message in conditions:
            new_conditions = set_condition(new_conditions, type=ctype, status=ok, reason=reason, message=message,
                                           generation=obj.metadata.generation)
        status: dict[str, Any] = {"conditions": new_conditions, "strandedServices": stranded or None,
                                  **(usage or {})}
        unchanged = (same_conditions(old_conditions, new_conditions)
                     and current.get("strandedServices", []) == stranded
                     and all(current.get(k) == v for k, v in (usage or {}).items()))
        if unchanged:
            return False
        try:
            await self.client.patch(IPPoolResource.Status, obj.metadata.name, {"status": status},
                                    patch_type=PatchType.MERGE)
        except ApiError as e:
            if e.status.code != 404:
                raise
        return True

    async def _patch(self, name: str, patch: dict[str, Any]) -> None:
        try:
            await self.client.patch(IPPoolResource, name, patch, patch_type=PatchType.MERGE)
        except ApiError as e:
            if e.status.code != 404:
                raise
