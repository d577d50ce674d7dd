"""The Service that holds a Gateway's address (pure).

A Gateway's address is a LoadBalancer Service's, of Portico's class, beside the Gateway and owned by it: the same
allocator, IPAllocation objects, pools (their namespace and Service selectors see the Gateway's namespace and
labels), announcement and node reports as every Service — nothing of that is written twice. The Service has no
selector and no endpoints: on the nodes its address is delivered to HAProxy instead of to pods.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

from portico.api.gateway import GROUP, VERSION, GatewaySpec, ObjectKey
from portico.controller.annotations import LOAD_BALANCER_CLASS, LOAD_BALANCER_IPS
from portico.ipam.blocks import IPAddress

PREFIX = "portico-gw-"
GATEWAY_LABEL = "gateway.networking.k8s.io/gateway-name"  # the label upstream implementations put on theirs
MANAGED_BY = ("app.kubernetes.io/managed-by", "portico-gateway")
MAX_NAME = 63


def service_name(gateway: str) -> str:
    """`portico-gw-NAME` as a DNS label: dots become dashes; a name too long is cut and a hash keeps it unique."""
    name = PREFIX + gateway.replace(".", "-")
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(gateway.encode()).hexdigest()[:10]
    return f"{name[:MAX_NAME - 11].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class UnsupportedAddress:
    message: str


def requested_addresses(spec: GatewaySpec) -> tuple[IPAddress, ...] | UnsupportedAddress:
    out = []
    for i, a in enumerate(spec.addresses):
        if a.type != "IPAddress":
            return UnsupportedAddress(f"spec.addresses[{i}]: type {a.type} is not supported (only IPAddress)")
        try:
            out.append(ipaddress.ip_address(a.value))
        except ValueError:
            return UnsupportedAddress(f"spec.addresses[{i}]: {a.value!r} is not an IP address")
    if len({a.version for a in out}) != len(out):
        return UnsupportedAddress("spec.addresses: at most one address per IP family")
    return tuple(out)


def desired_service(gateway: Any, spec: GatewaySpec, requested: tuple[IPAddress, ...]) -> dict[str, Any]:
    """The Service manifest (for a server-side apply) that holds `gateway`'s address."""
    meta = gateway.metadata
    ports = sorted({lst.port for lst in spec.listeners})
    svc_spec: dict[str, Any] = {
        "type": "LoadBalancer", "loadBalancerClass": LOAD_BALANCER_CLASS, "allocateLoadBalancerNodePorts": False,
        "ports": [{"name": f"port-{p}", "port": p, "protocol": "TCP", "targetPort": p} for p in ports]}
    annotations = {}
    if requested:
        annotations[LOAD_BALANCER_IPS] = ",".join(str(a) for a in requested)
        svc_spec["ipFamilies"] = [f"IPv{a.version}" for a in requested]
        svc_spec["ipFamilyPolicy"] = "RequireDualStack" if len(requested) > 1 else "SingleStack"
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": service_name(meta.name), "namespace": meta.namespace,
            "labels": {**(meta.labels or {}), GATEWAY_LABEL: meta.name[:MAX_NAME], MANAGED_BY[0]: MANAGED_BY[1]},
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "Gateway", "name": meta.name,
                                 "uid": meta.uid, "controller": True}]},
        "spec": svc_spec}


def owning_gateway(svc: Any) -> tuple[ObjectKey, str] | None:
    """The Gateway (key, UID) a Service is the address of, when it is one of ours."""
    meta = svc.metadata
    if meta is None or (meta.labels or {}).get(MANAGED_BY[0]) != MANAGED_BY[1]:
        return None
    for ref in meta.ownerReferences or []:
        if ref.kind == "Gateway" and ref.apiVersion.startswith(GROUP + "/") and ref.controller \
                and service_name(ref.name) == meta.name:
            return ObjectKey(meta.namespace or "", ref.name), ref.uid
    return None


def published_addresses(svc: Any) -> tuple[IPAddress, ...]:
    """The addresses the Service holds (its status.loadBalancer), in order."""
    lb = svc.status.loadBalancer if svc is not None and svc.status is not None else None
    return tuple(ipaddress.ip_address(i.ip) for i in (lb.ingress or []) if i.ip) if lb is not None else ()


def same_service(current: Any, desired: dict[str, Any]) -> bool:
    """Whether the live Service already says what `desired` does (so no write is needed)."""
    if current is None or current.spec is None or current.metadata is None:
        return False
    meta, spec = desired["metadata"], desired["spec"]
    live_ports = [(p.name, p.port, p.protocol, p.targetPort) for p in current.spec.ports or []]
    return (all((current.metadata.labels or {}).get(k) == v for k, v in meta["labels"].items())
            and {k: v for k, v in (current.metadata.annotations or {}).items() if k == LOAD_BALANCER_IPS}
            == meta["annotations"]
            and live_ports == [(p["name"], p["port"], p["protocol"], p["targetPort"]) for p in spec["ports"]]
            and current.spec.loadBalancerClass == spec["loadBalancerClass"]
            and (current.spec.ipFamilies == spec["ipFamilies"] if "ipFamilies" in spec else True))
