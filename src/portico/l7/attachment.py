"""Which listeners a route attaches to, and why not (pure): parentRef section and port, the listener's allowed
namespaces and kinds, and hostname intersection, as the Gateway API spec orders them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from portico.api.gateway import GROUP, Listener, ObjectKey, ParentReference, RouteGroupKind
from portico.ipam.selectors import selector_matches
from portico.l7.listeners import Cond, ListenerResult


@dataclass(frozen=True)
class GatewayListeners:
    """A Portico Gateway's listeners as written and as judged (portico.l7.listeners), in the same order."""

    key: ObjectKey
    specs: tuple[Listener, ...]
    results: tuple[ListenerResult, ...]


@dataclass(frozen=True)
class ParentResult:
    parent: ParentReference
    gateway: ObjectKey
    accepted: Cond
    listeners: tuple[str, ...]  # the listeners it attached to
    hostnames: Mapping[str, tuple[str, ...]]  # per attached listener, the hostnames served ("" = any)


def hostname_matches(pattern: str, host: str) -> bool:
    """A listener or route hostname (`*.example.com` matches names below example.com, not itself) against a name."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def intersect_hostnames(listener: str | None, route: list[str]) -> tuple[str, ...] | None:
    """The hostnames a route serves on a listener: those of the route the listener's hostname admits (a route
    wildcard narrower than or equal to the listener's stays a wildcard), or None when none intersect. "" = any."""
    if not listener:
        return tuple(route) or ("",)
    if not route:
        return (listener,)
    out = []
    for name in route:
        if hostname_matches(listener, name) or name == listener:
            out.append(name)
        elif name.startswith("*.") and hostname_matches(name, listener):
            out.append(listener)  # the route's wildcard is wider: the listener's name is what is served
    return tuple(dict.fromkeys(out)) or None


def _allowed(listener: Listener, gateway: ObjectKey, route_ns: str, ns_labels: Mapping[str, str]) -> bool:
    match listener.allowedRoutes.namespaces.from_:
        case "All":
            return True
        case "Same":
            return route_ns == gateway.namespace
        case _:
            selector = listener.allowedRoutes.namespaces.selector  # the CRD requires one with Selector
            return selector is not None and selector_matches(selector, ns_labels)


def attach(route_kind: str, route: ObjectKey, parent: ParentReference, route_hostnames: list[str], *,
           gateway: GatewayListeners, namespace_labels: Mapping[str, Mapping[str, str]]) -> ParentResult:
    """One parentRef of a route to one of Portico's Gateways: Accepted, or the first reason it is not."""
    kind = RouteGroupKind(kind=route_kind, group=GROUP)
    candidates = [(spec, result) for spec, result in zip(gateway.specs, gateway.results, strict=True)
                  if (parent.sectionName in (None, spec.name)) and (parent.port in (None, spec.port))]
    if not candidates:
        what = " and ".join([*([f"sectionName {parent.sectionName}"] if parent.sectionName else []),
                             *([f"port {parent.port}"] if parent.port else [])])
        return ParentResult(parent, gateway.key, Cond("Accepted", False, "NoMatchingParent",
                                                      f"Gateway {gateway.key} has no listener with {what}"), (), {})
    labels = namespace_labels.get(route.namespace, {})
    allowed = [(s, r) for s, r in candidates if r.condition("Accepted").status and kind in r.supported_kinds
               and _allowed(s, gateway.key, route.namespace, labels)]
    if not allowed:
        return ParentResult(parent, gateway.key, Cond(
            "Accepted", False, "NotAllowedByListeners",
            f"no listener of Gateway {gateway.key} allows a {route_kind} from namespace {route.namespace}"), (), {})
    hosts = {s.name: h for s, _ in allowed if (h := intersect_hostnames(s.hostname, route_hostnames)) is not None}
    if not hosts:
        return ParentResult(parent, gateway.key, Cond(
            "Accepted", False, "NoMatchingListenerHostname",
            f"none of the route's hostnames ({', '.join(route_hostnames)}) matches a listener of {gateway.key}"),
            (), {})
    return ParentResult(parent, gateway.key, Cond("Accepted", True, "Accepted"), tuple(hosts), hosts)
