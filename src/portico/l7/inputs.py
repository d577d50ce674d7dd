"""From the API objects the informers hold to the translation's inputs (pure): the controller and every agent
build them the same way, so what a status says is what is served."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from lightkube.resources.core_v1 import Secret

from portico.api.gateway import (
    CONTROLLER_NAME,
    GatewayClassSpec,
    GatewaySpec,
    ObjectKey,
    ReferenceGrantSpec,
    RouteSpec,
)
from portico.dataplane.l7model import Endpoint
from portico.ipam.blocks import IPAddress
from portico.l7.certificates import certificate_problem
from portico.l7.references import Grant
from portico.l7.translate import GatewayInput, RouteInput, World

log = logging.getLogger(__name__)

TLS_SECRET = "kubernetes.io/tls"


def key_of(obj: Any) -> ObjectKey:
    return ObjectKey(obj.metadata.namespace or "", obj.metadata.name)


def _decode(obj: Any, kind: type[Any]) -> Any | None:
    """The object's spec as `kind`, or None (logged) when it cannot be read; the CRDs' schemas make that rare."""
    try:
        return msgspec.convert(obj.spec, kind)
    except msgspec.ValidationError as e:
        log.warning("%s %s: unreadable spec (%s); ignored", type(obj).__name__, key_of(obj), e)
        return None


def our_classes(classes: Iterable[Any]) -> dict[str, GatewayClassSpec]:
    """GatewayClasses naming Portico's controller, by name."""
    out = {}
    for obj in classes:
        spec = _decode(obj, GatewayClassSpec)
        if spec is not None and spec.controllerName == CONTROLLER_NAME:
            out[obj.metadata.name] = spec
    return out


def our_gateways(gateways: Iterable[Any], classes: Mapping[str, GatewayClassSpec]) -> dict[ObjectKey, tuple[Any,
                                                                                                       GatewaySpec]]:
    """Gateways of one of our classes, still live: object and decoded spec, by key."""
    out = {}
    for obj in gateways:
        if obj.metadata.deletionTimestamp is not None:
            continue
        spec = _decode(obj, GatewaySpec)
        if spec is not None and spec.gatewayClassName in classes:
            out[key_of(obj)] = (obj, spec)
    return out


def gateway_inputs(gateways: Mapping[ObjectKey, tuple[Any, GatewaySpec]],
                   addresses: Mapping[ObjectKey, tuple[IPAddress, ...]]) -> list[GatewayInput]:
    return [GatewayInput(key, spec, addresses.get(key, ())) for key, (_, spec) in sorted(gateways.items())]


def route_inputs(routes: Iterable[Any]) -> list[RouteInput]:
    out = []
    for obj in routes:
        spec = _decode(obj, RouteSpec)
        if spec is not None and obj.metadata.deletionTimestamp is None:
            out.append(RouteInput(key_of(obj), str(obj.metadata.creationTimestamp or ""), spec))
    return sorted(out, key=lambda r: r.key)


def kept_secret(secret: Secret) -> Secret:
    """What an informer keeps of a Secret: its data only when it is a TLS certificate (the rest — Helm releases,
    tokens, passwords — is never held in memory)."""
    if secret.type == TLS_SECRET:
        return secret
    return Secret(metadata=secret.metadata, type=secret.type)


@functools.lru_cache(maxsize=4096)
def _problem(secret_type: str, crt: str, key: str) -> str | None:
    return certificate_problem(secret_type, {"tls.crt": crt, "tls.key": key})


def secret_problem(secret: Secret) -> str | None:
    data = secret.data or {}
    return _problem(secret.type or "", data.get("tls.crt", ""), data.get("tls.key", ""))


def world(services: Iterable[Any], endpoints: Mapping[tuple[ObjectKey, int], tuple[Endpoint, ...]],
          secrets: Iterable[Secret], grants: Iterable[Any], namespaces: Iterable[Any]) -> World:
    grant_list = []
    for obj in grants:
        spec = _decode(obj, ReferenceGrantSpec)
        if spec is not None:
            grant_list.append(Grant(obj.metadata.namespace, spec))
    return World(
        services={key_of(s): {p.port for p in (s.spec.ports or [])} for s in services if s.spec is not None},
        endpoints=endpoints,
        secrets={key_of(s): secret_problem(s) for s in secrets},
        grants=tuple(grant_list),
        namespace_labels={n.metadata.name: dict(n.metadata.labels or {}) for n in namespaces})
