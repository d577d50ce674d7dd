"""Nodes' reports -> status on Services, BGPPeers, L2Advertisements and BGPAdvertisements (I/O at the edges).

Level-triggered like every reconciler here: each key's status is computed from the caches and compared
with the object's status *as the cache shows it now*, so a recreated object, a status someone wiped, or
a restarted controller all converge. Written with server-side apply: on Services only the conditions
this manager owns (`portico.io/Announced`, `portico.io/Forwarding`) are touched; on Portico's own
objects the whole status is the controller's.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import ServiceStatus
from lightkube.types import PatchType

from portico.api import v1alpha1 as api
from portico.api.resources import BGPAdvertisementResource, BGPPeerResource, L2AdvertisementResource, decode
from portico.controller.conditions import same_conditions, set_condition
from portico.controller.node_reports import (
    ANNOUNCED,
    FORWARDING,
    NODES_SELECTED,
    NodeReport,
    Views,
    advertisement_problems,
    announced_condition,
    announcement_views,
    down_nodes,
    forwarding_problems,
    peer_sessions,
    selection_condition,
)
from portico.ipam.blocks import IPAddress
from portico.kube.client import apply_status
from portico.kube.events import EventRecorder

log = logging.getLogger(__name__)

STATUS_MANAGER = "portico-controller"
SERVICE_CONDITIONS_MANAGER = "portico-controller-announcements"  # owns only its conditions on Services
SERVICE_REPORT, PEER, L2_ADVERTISEMENT, BGP_ADVERTISEMENT = "service-report", "bgppeer", "l2adv", "bgpadv"


@dataclass(frozen=True)
class _Claims:
    """One node's report, as far as Services are concerned."""

    vips: frozenset[IPAddress] = frozenset()  # answered for or advertised
    problems: Mapping[str, str] = field(default_factory=dict)  # Service -> problem

    @staticmethod
    def of(status: api.PorticoNodeStatus) -> _Claims:
        return _Claims(frozenset(ipaddress.ip_address(a) for a in (*status.layer2, *status.bgp)),
                       {p.service: p.message for p in status.forwardingProblems})


@dataclass
class ReportReconciler:
    client: AsyncClient
    events: EventRecorder
    services: Mapping[str, Any]  # informer caches
    reports: Mapping[str, Any]  # PorticoNodes
    nodes: Mapping[str, Any]
    peers: Mapping[str, Any]
    l2_advertisements: Mapping[str, Any]
    bgp_advertisements: Mapping[str, Any]
    vips_of: Callable[[str], list[IPAddress]]  # Service key -> the addresses allocated to it, if it is ours
    withdrawn: Callable[[str], str | None] = lambda service: None  # why its policy withdraws it, if it does
    received: dict[str, int] = field(default_factory=dict)  # PorticoNode -> when it was last received
    _order: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _statuses: dict[str, api.PorticoNodeStatus] = field(default_factory=dict)  # decoded once per change
    _claims: dict[str, _Claims] = field(default_factory=dict)
    _views: Views | None = None
    _problems: dict[str, list[str]] | None = None

    # -- inputs ---------------------------------------------------------------------------------------
    def report_changed(self, name: str, obj: Any | None) -> tuple[set[IPAddress], set[str]]:
        """A PorticoNode came, changed or went. Returns the VIPs whose view may have changed and the Services
        whose forwarding problems did (cheap: this node's claims, and those of nodes whose liveness flipped)."""
        down_before = down_nodes(self._node_reports())
        before = self._claims.pop(name, _Claims())
        if obj is not None:
            self.received[name] = next(self._order)
            status = decode(getattr(obj, "status", None) or {}, api.PorticoNodeStatus)
            self._statuses[name] = status
            self._claims[name] = _Claims.of(status)
        else:
            self.received.pop(name, None)
            self._statuses.pop(name, None)
        after = self._claims.get(name, _Claims())
        self._views = self._problems = None
        vips = set(before.vips ^ after.vips)
        for flipped in down_before ^ down_nodes(self._node_reports()):
            vips |= self._claims.get(flipped, _Claims()).vips
        services = {k for k in before.problems.keys() | after.problems.keys()
                    if before.problems.get(k) != after.problems.get(k)}
        return vips, services

    def _node_reports(self) -> list[NodeReport]:
        return [NodeReport(name, status, self.received.get(name, 0)) for name, status in self._statuses.items()]

    @property
    def views(self) -> Views:
        if self._views is None:
            self._views = announcement_views(self._node_reports())
        return self._views

    @property
    def problems(self) -> dict[str, list[str]]:
        if self._problems is None:
            self._problems = forwarding_problems(self._node_reports())
        return self._problems

    # -- reconciling ------------------------------------------------------------------------------------
    async def reconcile(self, kind: str, key: str) -> None:
        match kind:
            case "service-report":
                await self._service(key)
            case "bgppeer":
                await self._announcement_object(key, self.peers, BGPPeerResource, api.BGPPeerSpec, sessions=True)
            case "l2adv":
                await self._announcement_object(key, self.l2_advertisements, L2AdvertisementResource,
                                                api.L2AdvertisementSpec, problems=True)
            case "bgpadv":
                await self._announcement_object(key, self.bgp_advertisements, BGPAdvertisementResource,
                                                api.BGPAdvertisementSpec)

    async def _service(self, key: str) -> None:
        svc = self.services.get(key)
        if svc is None or svc.metadata.deletionTimestamp is not None:
            return
        current: list[dict[str, Any]] = (svc.status.to_dict() if svc.status else {}).get("conditions", [])
        mine = [c for c in current if c.get("type") in (ANNOUNCED, FORWARDING)]
        wanted: list[dict[str, Any]] = []
        vips = self.vips_of(key)
        if vips:
            status, reason, message = announced_condition(vips, self.views, self.withdrawn(key))
            wanted = set_condition(mine, type=ANNOUNCED, status=status, reason=reason, message=message)
            wanted = [c for c in wanted if c["type"] == ANNOUNCED]
            if problems := self.problems.get(key):
                wanted += [c for c in set_condition(mine, type=FORWARDING, status=False, reason="ForwardingProblem",
                                                    message="; ".join(problems)) if c["type"] == FORWARDING]
        if same_conditions(mine, wanted):
            return
        body = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": svc.metadata.name, "namespace": svc.metadata.namespace},
                "status": {"conditions": wanted}}
        await self.client.patch(ServiceStatus, svc.metadata.name, body, namespace=svc.metadata.namespace,
                                patch_type=PatchType.APPLY, field_manager=SERVICE_CONDITIONS_MANAGER, force=True)

    async def _announcement_object(self, name: str, cache: Mapping[str, Any], resource: Any, spec_type: Any, *,
                                   sessions: bool = False, problems: bool = False) -> None:
        obj = cache.get(name)
        if obj is None or obj.metadata.deletionTimestamp is not None:
            return
        spec = decode(obj.spec, spec_type)
        current: dict[str, Any] = dict(obj.status or {})
        labels = {n: (node.metadata.labels or {}) for n, node in self.nodes.items()}
        status, reason, message = selection_condition(spec.nodeSelector, labels)
        conditions = set_condition(current.get("conditions", []), type=NODES_SELECTED, status=status, reason=reason,
                                   message=message, generation=obj.metadata.generation)
        wanted: dict[str, Any] = {"conditions": conditions}
        reports = self._node_reports()
        if sessions:
            wanted["sessions"] = peer_sessions(reports).get(name, [])
        if problems:
            wanted["problems"] = advertisement_problems(reports).get(name, [])
        if same_conditions(current.get("conditions", []), conditions) and all(
                current.get(k, []) == v for k, v in wanted.items() if k != "conditions"):
            return
        await apply_status(self.client, resource, name, wanted, field_manager=STATUS_MANAGER)
        for entry in wanted.get("problems", []):  # level-triggered: whatever the status lacked until now
            if entry not in current.get("problems", []):
                self.events.record(obj, type="Warning", reason="InterfaceMissing",
                                   message=entry["message"])
