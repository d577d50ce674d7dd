"""The agent on one node: informers -> desired frontends per Service -> the kernel, incrementally.

Level-triggered like the controller, but keyed per Service and batched: every change marks its
Service dirty, and one sync loop turns all dirty Services into one nftables transaction (after a
short coalescing window, so a rollout's burst of EndpointSlice updates costs few transactions).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from portico.agent.desired import service_frontends
from portico.agent.metrics import AgentMetrics
from portico.api.resources import IPAllocationResource
from portico.controller.allocations import allocation_from_object
from portico.dataplane.model import Frontend, FrontendPolicy
from portico.dataplane.nft import Nft
from portico.dataplane.nftables import NODE, Ruleset, node_fragment, render_frontend
from portico.dataplane.syncer import Syncer
from portico.ipam.blocks import IPAddress
from portico.kube.events import EventRecorder
from portico.kube.informer import Informer, object_key, run_synced

log = logging.getLogger(__name__)

COMPONENT = "portico-agent"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"  # set by the EndpointSlice controller
COALESCE_SECONDS = 0.02  # a burst of watch events becomes one transaction


class Agent:
    def __init__(self, client: AsyncClient, node: str, nft: Nft | None = None) -> None:
        self.node = node
        self.syncer = Syncer(nft or Nft())
        self.metrics = AgentMetrics(self.syncer.nft, self._service_of, lambda: dict(self.problems))
        self.events = EventRecorder(client, component=COMPONENT, host=node)
        self.services = Informer(client, Service, self._on_service)
        self.slices = Informer(client, EndpointSlice, self._on_slice)
        self.allocations = Informer(client, IPAllocationResource, self._on_allocation)
        self.nodes = Informer(client, Node, self._on_node, fields={"metadata.name": node})
        self.slices_of: dict[str, set[str]] = {}  # Service key -> its EndpointSlice keys
        self.vips_of: dict[str, set[IPAddress]] = {}  # Service UID -> addresses its IPAllocations give it
        self.applied: dict[Frontend, tuple[str, FrontendPolicy]] = {}  # frontend -> (Service key, policy)
        self.problems: dict[str, list[str]] = {}  # Service key -> what was last reported
        self._dirty: set[str] = set()
        self._triggered: dict[str, list[float]] = {}  # Service key -> trigger times (epoch) not yet applied
        self._synced = False  # changes listed at start-up are not "programming latency"
        self._node_dirty = True
        self._served_families: set[int] = {4, 6}
        self._wake = asyncio.Event()

    # -- informer callbacks: note what changed, never block -------------------------------------------
    def _mark(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()

    def _on_service(self, old: Any, new: Any) -> None:
        self._mark(object_key(new or old))

    def _on_slice(self, old: Any, new: Any) -> None:
        for obj, present in ((old, False), (new, True)):
            key = _service_of_slice(obj)
            if key is None:
                continue
            keys = self.slices_of.setdefault(key, set())
            (keys.add if present else keys.discard)(object_key(obj))
            self._mark(key)
        trigger, key = _trigger_time(new), _service_of_slice(new)
        if self._synced and trigger is not None and key is not None and trigger != _trigger_time(old):
            self._triggered.setdefault(key, []).append(trigger)

    def _on_allocation(self, old: Any, new: Any) -> None:
        for obj, present in ((old, False), (new, True)):
            allocation = allocation_from_object(obj) if obj is not None else None
            if allocation is None:
                continue
            for owner in allocation.owners:
                vips = self.vips_of.setdefault(owner.uid, set())
                (vips.add if present else vips.discard)(allocation.address)
                self._mark(f"{owner.namespace}/{owner.name}")

    def _on_node(self, old: Any, new: Any) -> None:
        self._node_dirty = True
        self._wake.set()

    # -- running --------------------------------------------------------------------------------------
    async def run(self) -> None:
        def started() -> list[Coroutine[Any, Any, None]]:
            self._synced = True
            log.info("caches synced: %d services, %d endpoint slices, %d allocations", len(self.services.cache),
                     len(self.slices.cache), len(self.allocations.cache))
            return [self._sync_forever()]
        await run_synced([self.nodes, self.allocations, self.services, self.slices], [self.events.run()], started)

    async def _sync_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self._wake.clear()
            try:
                await self.sync_once()
            except Exception:
                log.exception("sync failed; retrying")
                self._wake.set()
                await asyncio.sleep(1)

    async def sync_once(self) -> None:
        dirty, self._dirty = self._dirty, set()
        replacements: dict[object, Ruleset | None] = {}
        if self._node_dirty:
            replacements[NODE] = node_fragment(self._pod_cidrs())
            families = self._families()
            if families != self._served_families:  # rare: re-evaluate every Service
                self._served_families = families
                dirty |= set(self.problems) | {key for key, _ in self.applied.values()}
        for key in dirty:
            replacements.update(self._service_replacements(key))
        try:
            result = await self.syncer.sync(replacements)
        except Exception:
            self._dirty |= dirty  # try these again with the next sync (which will be a full one)
            self.metrics.sync_failures.inc()
            raise
        self._node_dirty = False
        if result.fallback:
            self.metrics.sync_failures.inc()
        if result.kind != "none":
            self.metrics.sync_seconds.labels(result.kind).observe(result.seconds)
            log.info("%s sync of %d services in %.1f ms%s", result.kind, len(dirty), result.seconds * 1000,
                     " (after a refused partial one)" if result.fallback else "")
        applied_at = time.time()
        for key in dirty:
            for trigger in self._triggered.pop(key, ()):
                self.metrics.programming_seconds.observe(max(0.0, applied_at - trigger))

    def _service_replacements(self, key: str) -> dict[object, Ruleset | None]:
        svc: Any = self.services.cache.get(key)
        vips = self.vips_of.get(svc.metadata.uid, set()) if svc is not None else set()
        wanted: dict[Frontend, FrontendPolicy] = {}
        problems: list[str] = []
        if svc is not None and vips:
            slices = [self.slices.cache[k] for k in self.slices_of.get(key, ()) if k in self.slices.cache]
            served = self._served_families
            unserved = sorted(str(a) for a in vips if a.version not in served)
            if unserved:
                problems.append(f"node {self.node} has no IPv{6 if 4 in served else 4} address: "
                                f"{', '.join(unserved)} not served from this node")
            vips = {a for a in vips if a.version in served}
            built = service_frontends(svc, sorted(vips, key=lambda a: (a.version, int(a))), slices, self.node)
            wanted, problems = built.frontends, problems + built.problems
        out: dict[object, Ruleset | None] = {}
        for fe, (owner, _) in list(self.applied.items()):
            if owner == key and fe not in wanted:
                del self.applied[fe]
                out[fe] = None
        for fe, policy in wanted.items():
            held = self.applied.get(fe)
            if held is not None and held[0] != key:
                problems.append(f"{fe} is already served for {held[0]}; not for this Service")
                continue
            if held is None or held[1] != policy:
                self.applied[fe] = (key, policy)
                out[fe] = render_frontend(fe, policy)
        if svc is None:
            self.problems.pop(key, None)
        else:
            self._report(svc, problems)
        return out

    def _report(self, svc: Any, problems: list[str]) -> None:
        key = object_key(svc)
        if self.problems.get(key, []) == problems:
            return
        self.problems[key] = problems
        for problem in problems:
            log.warning("%s: %s", key, problem)
            self.events.record(svc, type="Warning", reason="ForwardingProblem", message=problem)

    def _service_of(self, fe: Frontend) -> str | None:
        held = self.applied.get(fe)
        return held[0] if held else None

    def _families(self) -> set[int]:
        """The IP families this node has an address of (both when it reports none)."""
        node = self.nodes.cache.get(self.node)
        addresses = (node.status.addresses or []) if node is not None and node.status is not None else []
        families: set[int] = set()
        for a in addresses:
            if a.type in ("InternalIP", "ExternalIP"):
                with contextlib.suppress(ValueError):
                    families.add(ipaddress.ip_address(a.address).version)
        return families or {4, 6}

    def _pod_cidrs(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        node = self.nodes.cache.get(self.node)
        cidrs = (node.spec.podCIDRs or []) if node is not None and node.spec is not None else []
        return [ipaddress.ip_network(c) for c in cidrs]


def _service_of_slice(obj: Any) -> str | None:
    name = (obj.metadata.labels or {}).get(SERVICE_NAME_LABEL) if obj is not None else None
    return f"{obj.metadata.namespace}/{name}" if name else None


def _trigger_time(obj: Any) -> float | None:
    text = (obj.metadata.annotations or {}).get(TRIGGER_TIME) if obj is not None else None
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None
