"""Gateways and their HTTPRoutes as the L7 model HAProxy serves, with the statuses they earn (pure).

The one translation: the controller writes the statuses, each agent renders the model — both from the same
inputs, so what a status says is what is served.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from portico.api.gateway import GROUP, GatewaySpec, ObjectKey, RouteSpec
from portico.dataplane.l7model import (
    Endpoint,
    Filters,
    L7Config,
    L7Listener,
    Pool,
    PoolPolicy,
    RouteEntry,
    WeightedPool,
)
from portico.ipam.blocks import IPAddress
from portico.l7.attachment import GatewayListeners, ParentResult, attach
from portico.l7.backends import Backend, resolve_backend, resolved_refs
from portico.l7.filters import BACKEND_FILTERS, model_filters, response_timeout_ms
from portico.l7.listeners import Cond, ListenerResult, judge_listeners
from portico.l7.precedence import RankedMatch, precedence
from portico.l7.references import Grant


@dataclass(frozen=True)
class GatewayInput:
    key: ObjectKey
    spec: GatewaySpec
    addresses: tuple[IPAddress, ...]  # allocated (IPAllocation); none yet means nothing is bound


@dataclass(frozen=True)
class RouteInput:
    key: ObjectKey
    created: str  # metadata.creationTimestamp
    spec: RouteSpec


@dataclass(frozen=True)
class World:
    """Everything the translation reads besides Gateways and routes."""

    services: Mapping[ObjectKey, set[int]]  # Service → its ports
    endpoints: Mapping[tuple[ObjectKey, int], tuple[Endpoint, ...]]  # (Service, port) → ready pod endpoints
    secrets: Mapping[ObjectKey, str | None]  # Secret → why it is no certificate (None: it is one)
    grants: tuple[Grant, ...] = ()
    namespace_labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    pool_policies: Mapping[ObjectKey, PoolPolicy] = field(default_factory=dict)  # Service → its TrafficPolicy's


@dataclass(frozen=True)
class RouteStatus:
    parents: tuple[ParentResult, ...]
    resolved_refs: Cond


@dataclass(frozen=True)
class Translation:
    config: L7Config
    listeners: Mapping[ObjectKey, tuple[ListenerResult, ...]]
    attached_routes: Mapping[tuple[ObjectKey, str], int]  # (Gateway, listener) → routes attached
    routes: Mapping[ObjectKey, RouteStatus]


def pool_name(service: ObjectKey, port: int) -> str:
    return f"{service.namespace}_{service.name}_{port}"


def _hostname_specificity(hostname: str) -> tuple[int, int]:
    """Where hostnames intersect, the most specific wins before any path precedence (the HTTPRoute spec): an exact
    name, then longer wildcards, then any ("")."""
    if not hostname:
        return (2, 0)
    return (1, -len(hostname)) if hostname.startswith("*.") else (0, 0)


def _filters(spec: RouteSpec) -> tuple[list[Filters], dict[tuple[int, int], Filters], Cond | None]:
    """Each rule's filters and each backendRef's (by rule and position), and the first reason they cannot be
    served, if any (the route is then not served at all)."""
    refusals: list[Cond] = []

    def served(f: Filters | Cond) -> Filters:
        if isinstance(f, Cond):
            refusals.append(f)
            return Filters()
        return f

    rules = [served(model_filters(rule.filters, f"spec.rules[{r}].filters")) for r, rule in enumerate(spec.rules)]
    backends = {(r, k): served(model_filters(b.filters, f"spec.rules[{r}].backendRefs[{k}].filters",
                                             BACKEND_FILTERS))
                for r, rule in enumerate(spec.rules) for k, b in enumerate(rule.backendRefs)}
    return rules, backends, (refusals[0] if refusals else None)


def translate(gateways: Iterable[GatewayInput], routes: Iterable[RouteInput], world: World,
              certificate_file: Mapping[ObjectKey, str]) -> Translation:
    """`certificate_file`: where each Secret's PEM (chain + key) is written for HAProxy."""
    judged = {g.key: GatewayListeners(g.key, tuple(g.spec.listeners),
                                      tuple(judge_listeners(g.key, g.spec.listeners, world.secrets, world.grants)))
              for g in gateways}
    inputs = {g.key: g for g in gateways}
    attached: dict[tuple[ObjectKey, str], int] = defaultdict(int)
    statuses: dict[ObjectKey, RouteStatus] = {}
    # (Gateway, listener) → ranked entries
    entries: dict[tuple[ObjectKey, str], list[tuple[RankedMatch, RouteEntry]]] = defaultdict(list)
    pools: dict[str, Pool] = {}
    for route in routes:
        parents = []
        for ref in route.spec.parentRefs:
            gw_key = ObjectKey(ref.namespace or route.key.namespace, ref.name)
            if ref.group != GROUP or ref.kind != "Gateway" or gw_key not in judged:
                continue  # not a parent Portico owns: no status of ours
            parents.append(attach("HTTPRoute", route.key, ref, route.spec.hostnames, gateway=judged[gw_key],
                                  namespace_labels=world.namespace_labels))
        if not parents:
            continue
        backends: list[list[Backend]] = [
            [resolve_backend("HTTPRoute", route.key.namespace, b, world.services, world.grants)
             for b in rule.backendRefs] for rule in route.spec.rules]
        rule_filters, backend_filters, refused = _filters(route.spec)
        if refused is not None:  # not served at all: the status says why
            parents = [replace(p, accepted=refused, listeners=(), hostnames={}) if p.accepted.status else p
                       for p in parents]
        statuses[route.key] = RouteStatus(tuple(parents), resolved_refs(b for rule in backends for b in rule))
        weighted = []
        for r, rule_backends in enumerate(backends):
            ws = []
            for k, b in enumerate(rule_backends):
                if b.problem is None and refused is None:
                    name = pool_name(b.service, b.port)
                    pools.setdefault(name, Pool(name, world.endpoints.get((b.service, b.port), ()),
                                               world.pool_policies.get(b.service, PoolPolicy())))
                ws.append(WeightedPool(None if b.problem else pool_name(b.service, b.port), b.weight,
                                       backend_filters[(r, k)]))
            weighted.append(tuple(ws))
        for parent in parents:
            for listener in parent.listeners:
                attached[(parent.gateway, listener)] += 1
                for r, rule in enumerate(route.spec.rules):
                    for i, m in enumerate(rule.matches):
                        entries[(parent.gateway, listener)].append(
                            (RankedMatch(m, route.key, route.created, r, i),
                             RouteEntry(parent.hostnames[listener], m, weighted[r], rule_filters[r],
                                        response_timeout_ms(rule.timeouts))))
    listeners = []
    for key, gw in sorted(judged.items()):
        by_port: dict[int, list[tuple[tuple[tuple[int, int], tuple[object, ...]], RouteEntry]]] = defaultdict(list)
        certificates: dict[int, list[str]] = defaultdict(list)
        protocol: dict[int, str] = {}
        hostnames: dict[int, set[str]] = defaultdict(set)  # the port's listeners'
        for spec, result in zip(gw.specs, gw.results, strict=True):
            if not result.condition("Programmed").status:
                continue
            protocol[spec.port] = spec.protocol
            hostnames[spec.port].add(spec.hostname or "")
            certificates[spec.port] += [certificate_file[c] for c in result.certificates]
            for ranked, entry in entries[(key, spec.name)]:
                for host in entry.hostnames:  # one entry per hostname, each ranked by its own specificity
                    by_port[spec.port].append(((_hostname_specificity(host), precedence(ranked)),
                                               replace(entry, hostnames=(host,),
                                                       listener_hostname=spec.hostname or "")))
        for address in inputs[key].addresses:
            for port in sorted(protocol):
                ordered = tuple(e for _, e in sorted(by_port[port], key=lambda pair: pair[0]))
                isolation = tuple(sorted(hostnames[port], key=lambda h: (_hostname_specificity(h), h)))
                listeners.append(L7Listener(address, port, protocol[port], ordered,
                                            tuple(dict.fromkeys(certificates[port])), isolation))
    return Translation(L7Config(tuple(listeners), tuple(pools[n] for n in sorted(pools))),
                       {k: g.results for k, g in judged.items()}, dict(attached), statuses)
