"""A route rule's backendRefs resolved to Services (pure), with the route's ResolvedRefs condition. A reference
that does not resolve keeps its weight: the spec has its share of requests answered 500, not spread over the rest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from portico.api.gateway import GROUP, BackendRef, ObjectKey
from portico.l7.listeners import Cond
from portico.l7.references import Grant, Reference, permitted


@dataclass(frozen=True)
class Backend:
    service: ObjectKey
    port: int
    weight: int
    problem: Cond | None = None  # why it does not resolve (its share gets 500)


def resolve_backend(route_kind: str, route_ns: str, ref: BackendRef, service_ports: Mapping[ObjectKey, set[int]],
                    grants: Iterable[Grant]) -> Backend:
    key = ObjectKey(ref.namespace or route_ns, ref.name)
    port = ref.port or 0

    def broken(reason: str, message: str) -> Backend:
        return Backend(key, port, ref.weight, Cond("ResolvedRefs", False, reason, message))

    if ref.group != "" or ref.kind != "Service":
        return broken("InvalidKind", f"backendRef {ref.group or 'core'}/{ref.kind} {ref.name}: only Services")
    if not permitted(Reference(GROUP, route_kind, route_ns, "", "Service", key.namespace, key.name), grants):
        return broken("RefNotPermitted", f"backendRef Service {key} is in another namespace and no ReferenceGrant "
                                         "there allows it")
    if key not in service_ports:
        return broken("BackendNotFound", f"backendRef Service {key} does not exist")
    if port not in service_ports[key]:
        return broken("BackendNotFound", f"backendRef Service {key} has no port {port}")
    return Backend(key, port, ref.weight)


def resolved_refs(backends: Iterable[Backend]) -> Cond:
    """The route's ResolvedRefs: the first problem of any of its rules' backends, else True."""
    return next((b.problem for b in backends if b.problem is not None), Cond("ResolvedRefs", True, "ResolvedRefs"))
