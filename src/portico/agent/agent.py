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
from wsgiref.simple_server import WSGIServer

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from portico.agent.announcements import (
    VipOwners,
    advertisement_problems,
    l2_vips,
)
from portico.agent.bgp import BgpAnnouncements
from portico.agent.desired import service_frontends
from portico.agent.heartbeat_keys import HeartbeatKeys
from portico.agent.metrics import AgentMetrics
from portico.agent.node_report import NodeReporter
from portico.announce.announcer import L2Announcer
from portico.announce.heartbeat import HEARTBEAT_PORT
from portico.announce.links import interface_state, interface_with_address
from portico.api.resources import (
    IPAllocationResource,
    L2AdvertisementResource,
    PorticoNodeResource,
    decode,
)
from portico.api.v1alpha1 import L2AdvertisementSpec
from portico.controller.allocations import allocation_from_object
from portico.dataplane.conntrack import StaleFlows, forget, stale_flows
from portico.dataplane.drift import TableWatch
from portico.dataplane.model import Frontend, FrontendPolicy
from portico.dataplane.nft import Nft
from portico.dataplane.nftables import NODE, Ruleset, node_fragment, render_frontend
from portico.dataplane.syncer import Syncer
from portico.ipam.blocks import IPAddress
from portico.kube.events import EventRecorder
from portico.kube.informer import Informer, object_key, run_synced
from portico.serving import serve

log = logging.getLogger(__name__)

COMPONENT = "portico-agent"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"  # set by the EndpointSlice controller
COALESCE_SECONDS = 0.02  # a burst of watch events becomes one transaction


class Agent:
    def __init__(self, client: AsyncClient, node: str, nft: Nft | None = None, *, namespace: str = "portico-system",
                 heartbeat_port: int = HEARTBEAT_PORT) -> None:
        self._wake = asyncio.Event()
        self.node = node
        self.client = client
        self.syncer = Syncer(nft or Nft())
        self.table_watch = TableWatch(self.syncer.nft, self._on_drift)
        self.events = EventRecorder(client, component=COMPONENT, host=node)
        self.l2 = L2Announcer(node, self._record, self._announcers_changed, heartbeat_port=heartbeat_port)
        self.heartbeat_keys = HeartbeatKeys(client, namespace, self.l2.mesh)
        self.bgp = BgpAnnouncements(client, node, self._record, self._announcement_config_changed)
        self.metrics = AgentMetrics(self.syncer.nft, self._service_of, lambda: dict(self.problems), self.l2,
                                    self.bgp)
        self.services = Informer(client, Service, self._on_service)
        self.slices = Informer(client, EndpointSlice, self._on_slice)
        self.allocations = Informer(client, IPAllocationResource, self._on_allocation)
        self.nodes = Informer(client, Node, self._on_node)
        self.reports = Informer(client, PorticoNodeResource, self._on_report)  # every node's: who are peers
        self.reporter = NodeReporter(client, node, self.reports.cache, self.nodes.cache, self._node_report)
        self.l2_advertisements = Informer(client, L2AdvertisementResource, self._on_announcement_config)
        self.slices_of: dict[str, set[str]] = {}  # Service key -> its EndpointSlice keys
        self.vips_of: dict[str, set[IPAddress]] = {}  # Service UID -> addresses its IPAllocations give it
        self.allocated: dict[IPAddress, VipOwners] = {}  # every allocated address -> its pool and Services
        self.applied: dict[Frontend, tuple[str, FrontendPolicy]] = {}  # frontend -> (Service key, policy)
        self.frontends_of: dict[IPAddress, set[Frontend]] = {}  # VIP -> its applied frontends
        self.l2_specs: dict[str, L2AdvertisementSpec] = {}  # L2Advertisement name -> its spec
        self.problems: dict[str, list[str]] = {}  # Service key -> what was last reported
        self._advertisement_problems: dict[str, list[str]] = {}  # L2Advertisement -> why not answering there
        self._dirty: set[str] = set()
        self._triggered: dict[str, list[float]] = {}  # Service key -> trigger times (epoch) not yet applied
        self._synced = False  # changes listed at start-up are not "programming latency"
        self._node_dirty = True
        self._served_families: set[int] = {4, 6}
        self._stale_flows: list[StaleFlows] = []  # UDP flows to endpoints removed since the last sync
        self._data_path_ok = False  # the last sync succeeded (the first one is always full)
        self._default_interface: str | None = None  # the one holding this node's InternalIP

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
            if present:
                services = tuple(sorted(f"{o.namespace}/{o.name}" for o in allocation.owners))
                self.allocated[allocation.address] = VipOwners(allocation.pool, services)
            elif new is None:
                self.allocated.pop(allocation.address, None)
            for owner in allocation.owners:
                vips = self.vips_of.setdefault(owner.uid, set())
                (vips.add if present else vips.discard)(allocation.address)
                self._mark(f"{owner.namespace}/{owner.name}")

    def _on_node(self, old: Any, new: Any) -> None:
        if (new or old).metadata.name == self.node:
            self._node_dirty = True  # our pod CIDRs and addresses
            self._announcement_config_changed()

    def _on_report(self, old: Any, new: Any) -> None:
        if (new or old).metadata.name == self.node:
            self.reporter.wake()  # ours: level-triggered, whoever changed it
        elif _heartbeat(old) != _heartbeat(new):
            self._node_dirty = True  # a peer came, went or moved: the heartbeat filter lets in its address
            self._announcement_config_changed()

    def _on_announcement_config(self, old: Any, new: Any) -> None:
        if new is None:
            self.l2_specs.pop(object_key(old), None)
        else:
            self.l2_specs[object_key(new)] = decode(new.spec, L2AdvertisementSpec)
        self._announcement_config_changed()

    def _on_drift(self, what: str) -> None:
        """Someone else changed our table: lay it again from the desired state (a full sync)."""
        log.warning("the table was changed by someone else (%s); repairing it", what)
        self.metrics.table_repairs.inc()
        self.syncer.resync()
        self._wake.set()

    def _announcement_config_changed(self) -> None:
        self._wake.set()

    # -- running --------------------------------------------------------------------------------------
    def serve(self, address: str, port: int) -> WSGIServer:
        """/metrics, /healthz and /readyz on address:port (port 0: any; the server says which)."""
        return serve(address, port, self.metrics.registry, self.metrics.bridge, self.readiness)

    def readiness(self) -> str | None:
        if not self._synced:
            return "informer caches not synced yet"
        if not self._data_path_ok:
            return "rules not programmed: the first sync has not completed, or the last one failed"
        return None

    async def run(self) -> None:
        self.metrics.bridge.loop = asyncio.get_running_loop()

        def started() -> list[Coroutine[Any, Any, None]]:
            self._synced = True
            log.info("caches synced: %d services, %d endpoint slices, %d allocations", len(self.services.cache),
                     len(self.slices.cache), len(self.allocations.cache))
            return [self._sync_forever(), self.table_watch.run(), self.heartbeat_keys.run(), self.l2.run(),
                    self.bgp.run(), self.reporter.run()]
        informers: list[Informer[Any]] = [self.nodes, self.reports, self.allocations, self.l2_advertisements,
                                          self.bgp.peers, self.bgp.advertisements, self.services, self.slices]
        await run_synced(informers, [self.events.run()], started)

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
            replacements[NODE] = node_fragment(self._pod_cidrs(), self.l2.mesh.port,
                                               [address for address, _ in self._peers().values()])
            self._default_interface = self._interface_of_internal_ip()
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
            self._data_path_ok = False
            self._update_announcements()  # rules may be missing: withdraw at once
            raise
        self._data_path_ok = True
        self._node_dirty = False
        for fe, error in result.refused.items():
            self._leave_out(fe, error)
        self._update_announcements()
        stale, self._stale_flows = self._stale_flows, []
        await forget(stale)  # only now: until the new rules are in, a datagram would recreate them
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
        for fe, (owner, old) in list(self.applied.items()):
            if owner == key and fe not in wanted:
                del self.applied[fe]
                self.frontends_of[fe.vip].discard(fe)
                out[fe] = None
                self._stale_flows += stale_flows(fe, old.backends, ())
        for fe, policy in wanted.items():
            held = self.applied.get(fe)
            if held is not None and held[0] != key:
                problems.append(f"{fe} is already served for {held[0]}; not for this Service")
                continue
            if held is None or held[1] != policy:
                if held is not None:
                    self._stale_flows += stale_flows(fe, held[1].backends, policy.backends)
                self.applied[fe] = (key, policy)
                self.frontends_of.setdefault(fe.vip, set()).add(fe)
                out[fe] = render_frontend(fe, policy)
        if svc is None:
            self.problems.pop(key, None)
        else:
            self._report(svc, problems)
        return out

    def _leave_out(self, fe: object, error: str) -> None:
        """The kernel refused this frontend's rules: it is not applied (so its VIP is not announced for it here)
        and its Service is told; the next change to the Service tries again."""
        if not isinstance(fe, Frontend) or (held := self.applied.pop(fe, None)) is None:
            log.error("the kernel refused %s: %s", fe, error)
            return
        self.frontends_of[fe.vip].discard(fe)
        svc = self.services.cache.get(held[0])
        if svc is not None:
            self._report(svc, [*self.problems.get(held[0], []), f"the kernel refused the rules for {fe}, which is "
                               f"not served from node {self.node}: {_nft_error(error)}"])

    def _report(self, svc: Any, problems: list[str]) -> None:
        key = object_key(svc)
        if self.problems.get(key, []) == problems:
            return
        self.problems[key] = problems
        for problem in problems:
            log.warning("%s: %s", key, problem)
            self.events.record(svc, type="Warning", reason="ForwardingProblem", message=problem)

    # -- announcements ----------------------------------------------------------------------------------
    def _update_announcements(self) -> None:
        node = self.nodes.cache.get(self.node)
        labels = (node.metadata.labels or {}) if node is not None and node.metadata is not None else {}
        vips = l2_vips(self.node, labels=labels, default_interface=self._default_interface,
                       advertisements=self.l2_specs.values(), allocations=self.allocated,
                       policies_of=self._policies_of, is_local=self._is_local)
        self._advertisement_problems = {
            key: problems for key, spec in self.l2_specs.items()
            if (problems := advertisement_problems(self.node, labels, self._default_interface, spec,
                                                   interface_state))}
        self.l2.mesh.set_address(_internal_ip(node))
        self.l2.mesh.set_peers(self._peers())
        self.l2.set_vips(vips, self._data_path_ok)
        self.bgp.update(labels=labels, address=_internal_ip(node),
                        allocations=self.allocated, policies_of=self._policies_of, is_local=self._is_local,
                        data_path_ok=self._data_path_ok)
        self.reporter.wake()

    def _peers(self) -> dict[str, tuple[IPAddress, int]]:
        """The other nodes that run an agent (a PorticoNode with a heartbeat endpoint), and where they listen."""
        out: dict[str, tuple[IPAddress, int]] = {}
        for name, obj in self.reports.cache.items():
            heartbeat = (getattr(obj, "status", None) or {}).get("heartbeat")
            if name != self.node and heartbeat:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out[name] = (ipaddress.ip_address(heartbeat["address"]), int(heartbeat["port"]))
        return out

    def _policies_of(self, vip: IPAddress) -> list[FrontendPolicy]:
        return [self.applied[fe][1] for fe in self.frontends_of.get(vip, ())]

    def _is_local(self, service: str) -> bool:
        svc = self.services.cache.get(service)
        return svc is not None and svc.spec is not None and svc.spec.externalTrafficPolicy == "Local"

    def _record(self, service: str, type: str, reason: str, message: str) -> None:
        svc = self.services.cache.get(service)
        if svc is not None:
            self.events.record(svc, type="Warning" if type == "Warning" else "Normal", reason=reason,
                               message=message)

    def _announcers_changed(self) -> None:
        self.reporter.wake()

    def _node_report(self) -> dict[str, Any]:
        """This node's PorticoNode status: what it does (layer 2, BGP), hears, and cannot do."""
        mesh = self.l2.mesh
        return {
            "heartbeat": {"address": str(mesh.address), "port": mesh.port} if mesh.address is not None else None,
            "layer2": [str(v) for v in sorted(self.l2.owned, key=lambda a: (a.version, int(a)))],
            "bgp": [str(v) for v in sorted(self.bgp.advertised, key=lambda a: (a.version, int(a)))],
            "unreachable": sorted(n for n, p in mesh.peers.items() if not p.alive) if mesh.settled else [],
            "forwardingProblems": [{"service": k, "message": "; ".join(v)} for k, v in sorted(self.problems.items())
                                   if v],
            "bgpSessions": self.bgp.session_reports(),
            "l2Problems": [{"advertisement": k, "message": "; ".join(v)}
                           for k, v in sorted(self._advertisement_problems.items()) if v],
        }

    def _interface_of_internal_ip(self) -> str | None:
        node = self.nodes.cache.get(self.node)
        address = _internal_ip(node)
        return interface_with_address(str(address)) if address is not None else None

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


def _nft_error(text: str) -> str:
    """nft's complaint, without the statements it quotes: "Could not process rule: Operation not supported"."""
    reasons = [line.split("Error: ", 1)[1] for line in text.splitlines() if "Error: " in line]
    return "; ".join(dict.fromkeys(reasons))[:300] or text[:300]


def _heartbeat(obj: Any) -> Any:
    return (getattr(obj, "status", None) or {}).get("heartbeat") if obj is not None else None


def _internal_ip(node: Any) -> IPAddress | None:
    for a in (node.status.addresses or []) if node is not None and node.status is not None else []:
        if a.type == "InternalIP":
            with contextlib.suppress(ValueError):
                return ipaddress.ip_address(a.address)
    return None


def _service_of_slice(obj: Any) -> str | None:
    name = (obj.metadata.labels or {}).get(SERVICE_NAME_LABEL) if obj is not None else None
    return f"{obj.metadata.namespace}/{name}" if name else None


def _trigger_time(obj: Any) -> float | None:
    text = (obj.metadata.annotations or {}).get(TRIGGER_TIME) if obj is not None else None
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None
