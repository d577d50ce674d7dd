"""lightkube resource classes for Portico's CRDs (the API edge); decode `.spec`/`.status` with msgspec."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from lightkube.generic_resource import create_global_resource, create_namespaced_resource

from portico.api import gateway as gw
from portico.api import v1alpha1 as api

IPPoolResource = create_global_resource(api.GROUP, api.VERSION, api.IPPool.KIND, api.IPPool.PLURAL)
IPAllocationResource = create_global_resource(api.GROUP, api.VERSION, api.IPAllocation.KIND,
                                              api.IPAllocation.PLURAL)
L2AdvertisementResource = create_global_resource(api.GROUP, api.VERSION, api.L2Advertisement.KIND,
                                                 api.L2Advertisement.PLURAL)
BGPPeerResource = create_global_resource(api.GROUP, api.VERSION, api.BGPPeer.KIND, api.BGPPeer.PLURAL)
BGPAdvertisementResource = create_global_resource(api.GROUP, api.VERSION, api.BGPAdvertisement.KIND,
                                                  api.BGPAdvertisement.PLURAL)
PorticoNodeResource = create_global_resource(api.GROUP, api.VERSION, api.PorticoNode.KIND, api.PorticoNode.PLURAL)
TrafficPolicyResource = create_namespaced_resource(api.GROUP, api.VERSION, api.TrafficPolicy.KIND,
                                                   api.TrafficPolicy.PLURAL)

GatewayClassResource = create_global_resource(gw.GROUP, gw.VERSION, "GatewayClass", "gatewayclasses")
GatewayResource = create_namespaced_resource(gw.GROUP, gw.VERSION, "Gateway", "gateways")
HTTPRouteResource = create_namespaced_resource(gw.GROUP, gw.VERSION, "HTTPRoute", "httproutes")
ReferenceGrantResource = create_namespaced_resource(gw.GROUP, gw.VERSION, "ReferenceGrant", "referencegrants")

T = TypeVar("T")


def decode(value: Any, kind: type[T]) -> T:
    """A generic resource's spec/status (plain data) as our typed struct."""
    return msgspec.convert(value, kind)
