"""Wiring of the controller process: informers -> work queue -> reconcilers, under leader election."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Namespace, Node, Secret, Service
from lightkube.resources.networking_v1 import Ingress, IngressClass
from prometheus_client import CollectorRegistry, ProcessCollector

from portico.api.resources import (
    BGPAdvertisementResource,
    BGPPeerResource,
    GatewayClassResource,
    GatewayResource,
    HTTPRouteResource,
    IPAllocationResource,
    IPPoolResource,
    L2AdvertisementResource,
    PorticoNodeResource,
    ReferenceGrantResource,
    TrafficPolicyResource,
)
from portico.controller.allocations import allocation_from_object
from portico.controller.gateways import GatewayReconciler
from portico.controller.heartbeat_key import ensure_heartbeat_key
from portico.controller.ingresses import IngressReconciler
from portico.controller.metrics import ControllerState, ReconcileMetrics
from portico.controller.pools import PoolReconciler
from portico.controller.reports import BGP_ADVERTISEMENT, L2_ADVERTISEMENT, PEER, SERVICE_REPORT, ReportReconciler
from portico.controller.requests import is_ours, service_key
from portico.controller.services import Conflict, ServiceReconciler, service_exists
from portico.controller.traffic_policies import TrafficPolicyReconciler
from portico.ipam.allocator import Allocator
from portico.ipam.blocks import IPAddress
from portico.kube.events import EventRecorder
from portico.kube.informer import Informer, object_key, run_synced
from portico.kube.leader import LeaderElector
from portico.kube.workqueue import WorkQueue
from portico.l7.backend_policy import http_backends
from portico.l7.ingress import ingress_inputs, our_ingress_classes, our_ingresses
from portico.l7.inputs import kept_secret, our_classes, our_gateways, route_inputs
from portico.serving import LoopBridge, serve

log = logging.getLogger(__name__)

COMPONENT = "portico-controller"  # the source of our Events
SERVICE, POOL, TRAFFIC_POLICY = "service", "pool", "trafficpolicy"
GATEWAY_API = ("gateway-api", "")  # one key: every Gateway API status is one pass (portico.controller.gateways)
INGRESSES = ("ingresses", "")  # likewise every Ingress status (portico.controller.ingresses)
GATEWAY_API_DELAY = 0.1  # coalesce a burst of changes into one pass
POOL_STATUS_DELAY = 1.0  # coalesce usage updates of a pool under a burst of allocations
ORPHAN_SWEEP_INTERVAL = 60.0
REPORT_DEFER_SECONDS = 0.1
CONFLICT_RETRY_MAX = 0.5  # seconds: a lost optimistic-concurrency race is retried soon (see the worker)
EVENTS_QUEUED = 20_000
Item = tuple[str, str]


class Controller:
    def __init__(self, client: AsyncClient, *, default_class: bool = False, workers: int = 8,
                 namespace: str = "portico-system") -> None:
        self.client = client
        self.workers = workers
        self.allocator = Allocator()
        self.queue: WorkQueue[Item] = WorkQueue()
        self.registry = CollectorRegistry()  # served by run_controller; a test reads it directly
        self.metrics = ReconcileMetrics(self.registry)
        self.elector: LeaderElector | None = None  # none: it leads alone (--no-leader-elect)
        self.services = Informer(client, Service, self._on_service)
        self.allocations = Informer(client, IPAllocationResource, self._on_allocation)
        self.pools = Informer(client, IPPoolResource, self._on_pool)
        self.namespaces = Informer(client, Namespace, self._on_namespace)
        # Events yield to address writes under a burst; the queue holds a 10k-Service burst's worth.
        self.events = EventRecorder(client, component=COMPONENT, busy=self.queue.busy, max_queued=EVENTS_QUEUED)
        self.service_reconciler = ServiceReconciler(client, self.events, self.allocator, self.services.cache,
                                                    self.allocations.cache, self._namespace_labels,
                                                    default_class=default_class)
        self.pool_reconciler = PoolReconciler(client, self.events, self.allocator, self.pools.cache)
        # Nodes' reports (PorticoNode) and what they become on Services and announcement objects.
        self.reports = Informer(client, PorticoNodeResource, self._on_report)
        self.nodes = Informer(client, Node, self._on_node)
        self.peers = Informer(client, BGPPeerResource, self._on_announcement_object(PEER))
        self.l2_advertisements = Informer(client, L2AdvertisementResource,
                                          self._on_announcement_object(L2_ADVERTISEMENT))
        self.bgp_advertisements = Informer(client, BGPAdvertisementResource,
                                           self._on_announcement_object(BGP_ADVERTISEMENT))
        self.policies = Informer(client, TrafficPolicyResource, self._on_policy)
        self.policy_reconciler = TrafficPolicyReconciler(
            client, self.events, self.policies.cache, self.services.cache,
            lambda svc: is_ours(svc, default_class=default_class), self.reports.cache, self._http_backends)
        self.report_reconciler = ReportReconciler(
            client, self.events, self.services.cache, self.reports.cache, self.nodes.cache, self.peers.cache,
            self.l2_advertisements.cache, self.bgp_advertisements.cache, self._vips_of,
            self.policy_reconciler.withdrawn)
        # Gateway API: classes, Gateways, routes and what they refer to (the CRDs may not be installed).
        gateway_api = self._on_gateway_api
        self.gateway_classes = Informer(client, GatewayClassResource, self._on_http_frontend, optional=True)
        self.gateways = Informer(client, GatewayResource, self._on_http_frontend, optional=True)
        self.http_routes = Informer(client, HTTPRouteResource, self._on_http_frontend, optional=True)
        self.reference_grants = Informer(client, ReferenceGrantResource, gateway_api, optional=True)
        self.secrets = Informer(client, Secret, self._on_secret, transform=kept_secret)
        self.gateway_reconciler = GatewayReconciler(
            client, self.events, self.gateway_classes.cache, self.gateways.cache, self.http_routes.cache,
            self.reference_grants.cache, self.secrets.cache, self.services.cache, self.namespaces.cache)
        self.ingresses = Informer(client, Ingress, self._on_http_frontend)
        self.ingress_classes = Informer(client, IngressClass, self._on_http_frontend)
        self.ingress_reconciler = IngressReconciler(client, self.events, namespace, self.ingresses.cache,
                                                    self.ingress_classes.cache, self.services.cache,
                                                    self.secrets.cache)
        self._default_class = default_class
        self._parked_reports: set[str] = set()  # Service reports put off while addresses are being written
        self._due_reports: set[str] = set()  # put off for long enough: reconciled even while the queue is busy
        self.registry.register(ControllerState(lambda: len(self.queue),
                                               lambda: self.elector is None or self.elector.is_leader,
                                               self.allocations.cache, self.pools.cache))

    # -- informer callbacks: update the mirror, enqueue keys; never block ---------------------------------
    def _on_gateway_api(self, old: Any, new: Any) -> None:
        if self.gateways.cache or self.http_routes.cache or isinstance(new or old, GatewayClassResource):
            self.queue.add_after(GATEWAY_API, GATEWAY_API_DELAY)

    def _on_ingress(self, old: Any, new: Any) -> None:
        if self.ingresses.cache:
            self.queue.add_after(INGRESSES, GATEWAY_API_DELAY)

    def _on_http_frontend(self, old: Any, new: Any) -> None:
        """A Gateway API object or an Ingress changed: which Services are HTTP backends (what a TrafficPolicy may
        govern) may have too."""
        if isinstance(new or old, (Ingress, IngressClass)):
            self._on_ingress(old, new)
        else:
            self._on_gateway_api(old, new)
        for obj in self.policies.cache.values():
            self.queue.add((TRAFFIC_POLICY, object_key(obj)))

    def _http_backends(self) -> set[str]:
        gateways = our_gateways(self.gateways.cache.values(), our_classes(self.gateway_classes.cache.values()))
        ingresses = our_ingresses(ingress_inputs(self.ingresses.cache.values()),
                                  our_ingress_classes(self.ingress_classes.cache.values()))
        return http_backends(route_inputs(self.http_routes.cache.values()), gateways.keys(), ingresses)

    def _on_secret(self, old: Any, new: Any) -> None:
        self._on_gateway_api(old, new)
        self._on_ingress(old, new)

    def _on_service(self, old: Any, new: Any) -> None:
        key = object_key(new or old)
        self.queue.add((SERVICE, key))
        self.queue.add((SERVICE_REPORT, key))
        self._on_gateway_api(old, new)  # backendRefs, and Gateways' addresses
        self._on_ingress(old, new)  # backends, and the Ingress address
        for policy in self.policy_reconciler.naming(key):
            self.queue.add((TRAFFIC_POLICY, policy))

    def _on_policy(self, old: Any, new: Any) -> None:
        """One policy's targets decide the others' standing in its namespace: each of them is looked at again."""
        if old is not None and new is not None and _only_status_changed(old, new):
            return
        if new is None:
            self.policy_reconciler.forget(object_key(old))
        for policy in self.policy_reconciler.in_namespace((new or old).metadata.namespace):
            self.queue.add((TRAFFIC_POLICY, policy.key))
        for obj in (old, new):  # whether their Announced condition says withdrawn
            for target in (obj.spec or {}).get("targetRefs", []) if obj is not None else []:
                self.queue.add((SERVICE_REPORT, f"{obj.metadata.namespace}/{target.get('name')}"))

    def _on_report(self, old: Any, new: Any) -> None:
        """A node's report changed: the Services whose view changed with it, and every announcement object."""
        vips, services = self.report_reconciler.report_changed((new or old).metadata.name, new)
        for vip in vips:
            held = self.allocator.allocations.get(vip)
            services |= {str(owner) for owner in held.owners} if held is not None else set()
        for key in services:
            self.queue.add((SERVICE_REPORT, key))
        self._all_announcement_objects()
        for key in _health_changed(old, new):  # the health counts of the policies governing them, and whether
            self.queue.add((SERVICE_REPORT, key))  # a Withdraw policy has the Service withdrawn
            for policy in self.policy_reconciler.naming(key):
                self.queue.add((TRAFFIC_POLICY, policy))

    def _on_node(self, old: Any, new: Any) -> None:
        if old is None or new is None or old.metadata.labels != new.metadata.labels:
            self._all_announcement_objects()  # whom their nodeSelectors match

    def _on_announcement_object(self, kind: str) -> Callable[[Any, Any], None]:
        def handler(old: Any, new: Any) -> None:
            self.queue.add((kind, object_key(new or old)))
        return handler

    def _all_announcement_objects(self) -> None:
        for kind, informer in ((PEER, self.peers), (L2_ADVERTISEMENT, self.l2_advertisements),
                               (BGP_ADVERTISEMENT, self.bgp_advertisements)):
            for name in informer.cache:
                self.queue.add((kind, name))

    def _vips_of(self, key: str) -> list[IPAddress]:
        svc = self.services.cache.get(key)
        if svc is None or not is_ours(svc, default_class=self._default_class):
            return []
        return [a.address for a in self.allocator.owned_by(service_key(svc))]

    def _on_allocation(self, old: Any, new: Any) -> None:
        before = allocation_from_object(old) if old is not None else None
        after = allocation_from_object(new) if new is not None else None
        # The echo of our own write changes nothing in the mirror: its owners need no second look.
        news = after is None or self.allocator.allocations.get(after.address) != after
        if after is not None:
            self.allocator.record(after)
        elif before is not None and self.allocator.allocations.get(before.address) == before:
            self.allocator.forget(before.address)  # this very allocation, not a newer reservation
        if new is None:
            self._retry_waiting()  # an address came free
        for allocation in (before, after):
            if allocation is not None:
                self.queue.add_after((POOL, allocation.pool), POOL_STATUS_DELAY)
                for owner in allocation.owners if news else ():
                    self.queue.add((SERVICE, f"{owner.namespace}/{owner.name}"))
                for owner in allocation.owners:
                    self.queue.add((SERVICE_REPORT, f"{owner.namespace}/{owner.name}"))

    def _on_pool(self, old: Any, new: Any) -> None:
        if old is not None and new is not None and _only_status_changed(old, new):
            return  # our own usage report coming back: nothing to reconcile
        for name in self.pools.cache:  # overlaps are between pools: every pool's status may change
            self.queue.add((POOL, name))
        if new is None and old is not None:
            self.queue.add((POOL, old.metadata.name))
        self.pool_reconciler.sync_allocator()
        self._retry_waiting()

    def _on_namespace(self, old: Any, new: Any) -> None:
        if old is not None and new is not None and old.metadata.labels == new.metadata.labels:
            return
        self._retry_waiting(namespace=(new or old).metadata.name)
        self._on_gateway_api(old, new)  # allowedRoutes namespace selectors

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = self.namespaces.cache.get(namespace)
        return dict(ns.metadata.labels or {}) if ns is not None and ns.metadata is not None else {}

    def readiness(self) -> str | None:
        synced = all(i.synced.is_set() for i in self._informers())
        return None if synced else "informer caches not synced yet"

    def _retry_waiting(self, namespace: str | None = None) -> None:
        """Services refused an address may be served now (a pool grew, an address was freed)."""
        for key in self.service_reconciler.waiting:
            if namespace is None or key.startswith(namespace + "/"):
                self.queue.add((SERVICE, key))

    # -- running ----------------------------------------------------------------------------------------
    async def run(self, lead: Callable[[Callable[[], Coroutine[Any, Any, None]]], Coroutine[Any, Any, None]]
                  | None = None) -> None:
        """Fill the caches, then reconcile: at once, or while `lead` (leader election) lets the work run. A
        standby keeps its caches and mirror warm and its queue filled, so it acts the moment it leads."""
        def started() -> list[Coroutine[Any, Any, None]]:
            self.pool_reconciler.sync_allocator()
            log.info("caches synced: %d services, %d allocations, %d pools", len(self.services.cache),
                     len(self.allocations.cache), len(self.pools.cache))
            return [self._reconcile() if lead is None else lead(self._reconcile)]
        await run_synced(self._informers(), [self.events.run()], started)

    def _informers(self) -> list[Informer[Any]]:
        return [self.namespaces, self.pools, self.allocations, self.services, self.nodes, self.reports, self.peers,
                self.l2_advertisements, self.bgp_advertisements, self.policies, self.gateway_classes, self.gateways,
                self.http_routes, self.reference_grants, self.secrets, self.ingresses, self.ingress_classes]

    async def _reconcile(self) -> None:
        await asyncio.gather(*(self._worker() for _ in range(self.workers)), self._sweep_orphans_forever(),
                             self._unpark_reports_forever())

    async def _unpark_reports_forever(self) -> None:
        """Parked reports go back all at once when the queue has drained; while it is busy, one every
        REPORT_DEFER_SECONDS (as Events yield), so none waits forever under steady work."""
        while True:
            await asyncio.sleep(REPORT_DEFER_SECONDS)
            if not self._parked_reports:
                continue
            if len(self.queue):
                key = self._parked_reports.pop()
                self._due_reports.add(key)  # its turn: not parked again
                self.queue.add((SERVICE_REPORT, key))
                continue
            keys, self._parked_reports = self._parked_reports, set()
            for key in keys:
                self.queue.add((SERVICE_REPORT, key))

    async def _worker(self) -> None:
        while True:
            item = await self.queue.get()
            kind, key = item
            with self.metrics.timed(kind):
                try:
                    if kind == SERVICE:
                        await self.service_reconciler.reconcile(key)
                    elif kind == POOL:
                        await self.pool_reconciler.reconcile(key)
                    elif kind == TRAFFIC_POLICY:
                        await self.policy_reconciler.reconcile(key)
                    elif item == GATEWAY_API:
                        await self.gateway_reconciler.reconcile()
                    elif item == INGRESSES:
                        await self.ingress_reconciler.reconcile()
                    elif kind == SERVICE_REPORT and len(self.queue) and key not in self._due_reports:
                        # Addresses first: under a burst, what the nodes report about a Service waits until the
                        # queue has drained (as Events do), so it costs the allocations nothing.
                        self._parked_reports.add(key)
                    else:
                        self._due_reports.discard(key)
                        await self.report_reconciler.reconcile(kind, key)
                    self.queue.forget(item)
                except Conflict as e:
                    # Optimistic concurrency losing a race (another controller, or our cache behind): the next try
                    # reads afresh, so it is contention, not failure — back off, but never for long. (Uncapped, 30
                    # Services leaving one shared address under two controllers reached the 60 s cap.)
                    log.debug("%s %s: %s; retrying", kind, key, e)
                    self.queue.retry(item, max_delay=CONFLICT_RETRY_MAX)
                except ApiError as e:
                    self.metrics.errors.labels(kind).inc()
                    delay = self.queue.retry(item)
                    log.warning("%s %s: %s (retry in %.2fs)", kind, key, e.status.message, delay)
                except Exception:
                    self.metrics.errors.labels(kind).inc()
                    delay = self.queue.retry(item)
                    log.exception("%s %s failed (retry in %.2fs)", kind, key, delay)
                finally:
                    self.queue.done(item)

    async def _sweep_orphans_forever(self) -> None:
        while True:
            try:
                await self.sweep_orphans()
            except Exception:
                log.exception("orphan sweep failed")
            await asyncio.sleep(ORPHAN_SWEEP_INTERVAL)

    async def sweep_orphans(self) -> None:
        """Delete IPAllocations whose every owner is gone (a cluster-scoped object cannot have a namespaced
        owner reference, so garbage collection cannot do it). Each owner is checked live before deleting."""
        live_uids = {s.metadata.uid for s in self.services.cache.values() if s.metadata is not None}
        for name, obj in list(self.allocations.cache.items()):
            allocation = allocation_from_object(obj)
            if allocation is None or any(o.uid in live_uids for o in allocation.owners):
                continue
            if any([await service_exists(self.client, o) for o in allocation.owners]):
                continue
            log.info("deleting orphaned IPAllocation %s (owners gone: %s)", name,
                     ", ".join(sorted(str(o) for o in allocation.owners)))
            try:
                await self.client.delete(IPAllocationResource, name)
            except ApiError as e:
                if e.status.code != 404:
                    raise
            self.allocator.forget(allocation.address)


def _health_changed(old: Any, new: Any) -> set[str]:
    """The Services whose health counts differ between two versions of a node's report."""
    def counts(obj: Any) -> dict[str, Any]:
        entries = (getattr(obj, "status", None) or {}).get("health", []) if obj is not None else []
        return {e.get("service"): (e.get("healthy"), e.get("total")) for e in entries}
    before, after = counts(old), counts(new)
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def _only_status_changed(old: Any, new: Any) -> bool:
    """Custom resources bump metadata.generation on spec changes only; deletion and finalizers are metadata."""
    a, b = old.metadata, new.metadata
    return (a.generation, a.deletionTimestamp, a.finalizers) == (b.generation, b.deletionTimestamp, b.finalizers)


def _dump_tasks() -> None:
    """SIGUSR1: log what every task is waiting on (for a controller that seems stuck)."""
    for task in asyncio.all_tasks():
        where: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and len(where) < 30:  # follow the await chain down to where it waits
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if frame is not None:
                where.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        log.warning("task %s: %s", task.get_name(), " > ".join(where) or "(no frames)")


async def run_controller(client: AsyncClient, *, default_class: bool, leader_elect: bool, namespace: str,
                         workers: int = 8, probe_address: tuple[str, int] | None = None) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    key = asyncio.create_task(ensure_heartbeat_key(client, namespace))  # in the background: it retries until made
    controller = Controller(client, default_class=default_class, workers=workers, namespace=namespace)
    if probe_address is not None:
        ProcessCollector(registry=controller.registry)
        bridge = LoopBridge()
        bridge.loop = asyncio.get_running_loop()
        serve(*probe_address, controller.registry, bridge, controller.readiness)
    try:
        if not leader_elect:
            await controller.run()
            return
        identity = os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"
        elector = LeaderElector(client, namespace=namespace, name="portico-controller", identity=identity)
        controller.elector = elector
        await controller.run(elector.run)
    finally:
        key.cancel()
