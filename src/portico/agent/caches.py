"""What the agent reads from the API: informer caches, the indexes over them, and what changed since the last sync.

The first stage of the agent's one-way flow (caches -> the node's desired view -> consumers). Handlers only
note what changed and wake the sync loop; they never act. Everything here is read by the stages after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from datetime import datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Node, Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice

from portico.agent.announcements import VipOwners
from portico.agent.bgp import BgpConfig
from portico.agent.gateway_caches import GatewayCaches
from portico.api.resources import (
    IPAllocationResource,
    L2AdvertisementResource,
    PorticoNodeResource,
    TrafficPolicyResource,
    decode,
)
from portico.api.v1alpha1 import L2AdvertisementSpec, TrafficPolicySpec
from portico.controller.allocations import allocation_from_object
from portico.ipam.blocks import IPAddress
from portico.kube.informer import Informer, object_key
from portico.policy.attachment import governing, policy_from_object
from portico.policy.readiness import has_readiness_gate

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"  # set by the EndpointSlice controller


class AgentCaches:
    def __init__(self, client: AsyncClient, node: str, namespace: str = "portico-system") -> None:
        self.node = node
        self.changed = asyncio.Event()  # something the sync loop must look at
        self.own_report_changed = asyncio.Event()  # our PorticoNode changed (by us, or someone else: rewrite it)
        self.services = Informer(client, Service, self._on_service)
        self.slices = Informer(client, EndpointSlice, self._on_slice)
        self.allocations = Informer(client, IPAllocationResource, self._on_allocation)
        self.nodes = Informer(client, Node, self._on_node)
        self.reports = Informer(client, PorticoNodeResource, self._on_report)  # every node's: who are peers
        self.l2_advertisements = Informer(client, L2AdvertisementResource, self._on_l2_advertisement)
        self.bgp = BgpConfig(client, self._announcement_config_changed, namespace)
        self.policies = Informer(client, TrafficPolicyResource, self._on_policy)
        # This node's pods only (as a kubelet watches them): those with Portico's readiness gate wait on us.
        self.pods = Informer(client, Pod, self._on_pod, fields={"spec.nodeName": node})
        self.gateway_api = GatewayCaches(client, self._mark, namespace)
        self.slices_of: dict[str, set[str]] = {}  # Service key -> its EndpointSlice keys
        self.vips_of: dict[str, set[IPAddress]] = {}  # Service UID -> addresses its IPAllocations give it
        self.allocated: dict[IPAddress, VipOwners] = {}  # every allocated address -> its pool and Services
        self.l2_specs: dict[str, L2AdvertisementSpec] = {}  # L2Advertisement name -> its spec
        self.policy_of: dict[str, TrafficPolicySpec] = {}  # Service key -> the TrafficPolicy governing it
        self.synced = False  # changes listed at start-up are not "programming latency"
        self._dirty: set[str] = set()  # Services whose frontends may have changed
        self._node_dirty = True  # this node's own inputs (pod CIDRs, addresses) or its peers changed
        self.triggered: dict[str, list[float]] = {}  # Service key -> trigger times (epoch) not yet applied

    def informers(self) -> list[Informer[Any]]:
        return [self.nodes, self.reports, self.allocations, self.l2_advertisements, self.bgp.peers,
                self.bgp.advertisements, self.policies, self.pods, self.services, self.slices,
                *self.gateway_api.informers()]

    def take_changes(self) -> tuple[set[str], bool]:
        """(dirty Services, whether the node's own inputs changed), and forget them."""
        dirty, node_dirty = self._dirty, self._node_dirty
        self._dirty, self._node_dirty = set(), False
        return dirty, node_dirty

    def put_back(self, dirty: set[str], node_dirty: bool) -> None:
        """A sync failed: its changes are still to do."""
        self._dirty |= dirty
        self._node_dirty |= node_dirty
        self.changed.set()

    def mark_all(self, keys: set[str]) -> None:
        self._dirty |= keys
        self.changed.set()
        self.gateway_api.changed.set()

    # -- informer handlers: note what changed, never block ----------------------------------------------
    def _mark(self, key: str) -> None:
        self._dirty.add(key)
        self.changed.set()
        self.gateway_api.changed.set()  # a backend's endpoints, or a Gateway's addresses, may be HAProxy's

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
        if self.synced and trigger is not None and key is not None and trigger != _trigger_time(old):
            self.triggered.setdefault(key, []).append(trigger)

    def _on_policy(self, old: Any, new: Any) -> None:
        """Which policy governs which Service in this namespace (one policy's targets decide the others')."""
        namespace = (new or old).metadata.namespace
        policies = [policy_from_object(obj) for obj in self.policies.cache.values()
                    if obj.metadata is not None and obj.metadata.namespace == namespace]
        specs = {entry.key: spec for entry, spec in policies}
        wanted = {svc: specs[entry.key] for svc, entry in governing(e for e, _ in policies).items()}
        for key in {k for k in self.policy_of if k.startswith(namespace + "/")} | set(wanted):
            if self.policy_of.get(key) != wanted.get(key):
                if key in wanted:
                    self.policy_of[key] = wanted[key]
                else:
                    del self.policy_of[key]
                self._mark(key)

    def _on_pod(self, old: Any, new: Any) -> None:
        if has_readiness_gate(old) or has_readiness_gate(new):
            self.changed.set()  # the readiness gates are looked at on the next sync; other pods do not matter

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
            self.changed.set()

    def _on_report(self, old: Any, new: Any) -> None:
        if (new or old).metadata.name == self.node:
            self.own_report_changed.set()  # level-triggered, whoever changed it
        elif _heartbeat(old) != _heartbeat(new):
            self._node_dirty = True  # a peer came, went or moved: the heartbeat filter lets in its address
            self.changed.set()

    def _on_l2_advertisement(self, old: Any, new: Any) -> None:
        if new is None:
            self.l2_specs.pop(object_key(old), None)
        else:
            self.l2_specs[object_key(new)] = decode(new.spec, L2AdvertisementSpec)
        self._announcement_config_changed()

    def _announcement_config_changed(self) -> None:
        self.changed.set()

    # -- lookups -------------------------------------------------------------------------------------------
    def node_object(self) -> Any:
        return self.nodes.cache.get(self.node)

    def labels(self) -> dict[str, str]:
        node = self.node_object()
        return dict(node.metadata.labels or {}) if node is not None and node.metadata is not None else {}

    def internal_ip(self) -> IPAddress | None:
        return internal_ip(self.node_object())

    def families(self) -> set[int]:
        """The IP families this node has an address of (both when it reports none)."""
        node = self.node_object()
        addresses = (node.status.addresses or []) if node is not None and node.status is not None else []
        families: set[int] = set()
        for a in addresses:
            if a.type in ("InternalIP", "ExternalIP"):
                with contextlib.suppress(ValueError):
                    families.add(ipaddress.ip_address(a.address).version)
        return families or {4, 6}

    def pod_cidrs(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        node = self.node_object()
        cidrs = (node.spec.podCIDRs or []) if node is not None and node.spec is not None else []
        return [ipaddress.ip_network(c) for c in cidrs]

    def peers(self) -> dict[str, tuple[IPAddress, int]]:
        """The other nodes that run an agent (a PorticoNode with a heartbeat endpoint), and where they listen."""
        out: dict[str, tuple[IPAddress, int]] = {}
        for name, obj in self.reports.cache.items():
            heartbeat = _heartbeat(obj)
            if name != self.node and heartbeat:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out[name] = (ipaddress.ip_address(heartbeat["address"]), int(heartbeat["port"]))
        return out

    def is_local(self, service: str) -> bool:
        svc = self.services.cache.get(service)
        return svc is not None and svc.spec is not None and svc.spec.externalTrafficPolicy == "Local"

    def services_on(self, nodes: frozenset[str]) -> set[str]:
        """The Services with an endpoint on one of these nodes."""
        out: set[str] = set()
        for obj in self.slices.cache.values():
            key = _service_of_slice(obj)
            if key is not None and key not in out and any(ep.nodeName in nodes for ep in obj.endpoints or []):
                out.add(key)
        return out

    def slices_for(self, key: str) -> list[Any]:
        return [self.slices.cache[k] for k in self.slices_of.get(key, ()) if k in self.slices.cache]


def internal_ip(node: Any) -> IPAddress | None:
    for a in (node.status.addresses or []) if node is not None and node.status is not None else []:
        if a.type == "InternalIP":
            with contextlib.suppress(ValueError):
                return ipaddress.ip_address(a.address)
    return None


def _heartbeat(obj: Any) -> Any:
    return (getattr(obj, "status", None) or {}).get("heartbeat") if obj is not None else None


def _service_of_slice(obj: Any) -> str | None:
    name = (obj.metadata.labels or {}).get(SERVICE_NAME_LABEL) if obj is not None else None
    return f"{obj.metadata.namespace}/{name}" if name else None


def _trigger_time(obj: Any) -> float | None:
    text = (obj.metadata.annotations or {}).get(TRIGGER_TIME) if obj is not None else None
    try:
        return datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None
