"""From a Service object to an allocation request (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from lightkube.models.core_v1 import Service

from portico.controller.annotations import LOAD_BALANCER_CLASS, address_options
from portico.ipam.allocator import FamilyPolicy, Request, ServiceKey, ServicePort, SharingProfile


def service_key(svc: Service) -> ServiceKey:
    meta = svc.metadata
    assert meta is not None
    return ServiceKey(meta.namespace or "default", meta.name or "", meta.uid or "")


def is_ours(svc: Service, *, default_class: bool) -> bool:
    """A LoadBalancer Service of Portico's class (or of no class, when Portico is the default)."""
    spec = svc.spec
    if spec is None or spec.type != "LoadBalancer":
        return False
    if spec.loadBalancerClass is None:
        return default_class
    return spec.loadBalancerClass == LOAD_BALANCER_CLASS


def sharing_profile(svc: Service) -> SharingProfile:
    spec = svc.spec
    assert spec is not None
    return SharingProfile(
        ports=frozenset(ServicePort(p.protocol or "TCP", p.port) for p in spec.ports or []),
        traffic_policy=spec.externalTrafficPolicy or "Cluster",
        selector=frozenset((spec.selector or {}).items()),
    )


def allocation_request(svc: Service, namespace_labels: Mapping[str, str]) -> Request:
    """Raises InvalidAnnotation when the Service's annotations cannot be understood."""
    spec, meta = svc.spec, svc.metadata
    assert spec is not None and meta is not None
    options = address_options(meta.annotations or {}, spec.loadBalancerIP)
    families = tuple(6 if f == "IPv6" else 4 for f in spec.ipFamilies or ["IPv4"])
    return Request(
        service=service_key(svc),
        families=families,
        policy=cast(FamilyPolicy, spec.ipFamilyPolicy or "SingleStack"),
        requested=options.requested,
        pool=options.pool,
        sharing_key=options.sharing_key,
        profile=sharing_profile(svc),
        labels=dict(meta.labels or {}),
        namespace_labels=dict(namespace_labels),
    )
