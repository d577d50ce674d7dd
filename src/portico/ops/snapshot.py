"""One read of every object the operator views are made of, as plain API data (dicts as the API server sends them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Event, Node, Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.resources.networking_v1 import Ingress, IngressClass

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
    TrafficPolicyResource,
)

Obj = dict[str, Any]
AGENT_SELECTOR = {"app.kubernetes.io/name": "portico-agent"}  # the chart's agent DaemonSet pods


@dataclass(frozen=True)
class Snapshot:
    services: list[Obj] = field(default_factory=list)
    endpoint_slices: list[Obj] = field(default_factory=list)
    nodes: list[Obj] = field(default_factory=list)
    agent_pods: list[Obj] = field(default_factory=list)
    pools: list[Obj] = field(default_factory=list)
    allocations: list[Obj] = field(default_factory=list)
    portico_nodes: list[Obj] = field(default_factory=list)
    l2_advertisements: list[Obj] = field(default_factory=list)
    bgp_advertisements: list[Obj] = field(default_factory=list)
    bgp_peers: list[Obj] = field(default_factory=list)
    traffic_policies: list[Obj] = field(default_factory=list)
    gateway_classes: list[Obj] = field(default_factory=list)
    gateways: list[Obj] = field(default_factory=list)
    http_routes: list[Obj] = field(default_factory=list)
    ingresses: list[Obj] = field(default_factory=list)
    ingress_classes: list[Obj] = field(default_factory=list)
    events: list[Obj] = field(default_factory=list)  # only when read with events=True


async def read(client: AsyncClient, *, events_in: str | None = None) -> Snapshot:
    """Everything, from every namespace (the views filter); Events only of namespace `events_in` and of `default`
    (where Events about cluster-scoped objects land). A kind the cluster does not serve (Gateway API's CRDs not
    installed) reads as none."""
    async def listed(resource: Any, **kwargs: Any) -> list[Obj]:
        try:
            return [obj.to_dict() for obj in await _all(client.list(resource, **kwargs))]
        except ApiError as e:
            if e.status.code == 404:
                return []
            raise

    async def events() -> list[Obj]:
        if events_in is None:
            return []
        namespaces = sorted({events_in, "default"})
        return [e for ns in namespaces for e in await listed(Event, namespace=ns)]

    everywhere = {"namespace": "*"}
    (services, slices, nodes, pods, pools, allocations, reports, l2, bgp_ads, peers, policies, classes, gateways,
     routes, ingresses, ingress_classes, recorded) = await asyncio.gather(
        listed(Service, **everywhere), listed(EndpointSlice, **everywhere), listed(Node),
        listed(Pod, labels=AGENT_SELECTOR, **everywhere), listed(IPPoolResource), listed(IPAllocationResource),
        listed(PorticoNodeResource), listed(L2AdvertisementResource), listed(BGPAdvertisementResource),
        listed(BGPPeerResource), listed(TrafficPolicyResource, **everywhere), listed(GatewayClassResource),
        listed(GatewayResource, **everywhere), listed(HTTPRouteResource, **everywhere),
        listed(Ingress, **everywhere), listed(IngressClass), events())
    return Snapshot(services, slices, nodes, pods, pools, allocations, reports, l2, bgp_ads, peers, policies, classes,
                    gateways, routes, ingresses, ingress_classes, recorded)


async def _all(items: AsyncIterable[Any]) -> list[Any]:
    return [item async for item in items]
