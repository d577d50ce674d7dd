"""From one Service, its EndpointSlices and its addresses to its frontends (pure).

What a platform engineer expects from the Service spec, as kube-proxy does it:
  * one frontend per address x port; the endpoint's port is the slice port of the same name
    (a named targetPort resolves per endpoint, so pods may differ);
  * only ready endpoints take new flows (terminating ones keep theirs through conntrack), and the pods whose
    Portico readiness gate waits for the rules (`gated`, portico.policy.readiness);
  * externalTrafficPolicy Local: this node's endpoints only (and the client address is kept);
  * loadBalancerSourceRanges, sessionAffinity ClientIP, and the `portico.io/lb-algorithm` annotation;
  * endpoint weights from the `portico.io/endpoint-weights` annotation (`weights()` below);
  * the TrafficPolicy governing the Service, whose sections replace those shortcuts (`portico.policy.traffic`).
What cannot be honoured is reported as a problem, never raised: the rest of the Service still works.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from lightkube.models.core_v1 import Service, ServiceSpec
from lightkube.models.discovery_v1 import EndpointSlice

from portico.api import v1alpha1 as api
from portico.dataplane.l7model import Endpoint
from portico.dataplane.model import Algorithm, Backend, Frontend, FrontendPolicy, IPNetwork, Limits
from portico.health.checks import NOBODY, ByNode, covers, listed
from portico.ipam.blocks import IPAddress
from portico.policy.traffic import (
    DEFAULT_AFFINITY_TIMEOUT,
    ENDPOINT_WEIGHTS,
    LB_ALGORITHM,
    algorithm_name,
    parse_bandwidth,
    persistence_timeout,
)

MAX_WEIGHT = 100  # a weight is a number of slots: keep tables small
WEIGHT_KEYS = ("pod", "node", "zone")  # most specific first
FAMILY_OF_ADDRESS_TYPE = {"IPv4": 4, "IPv6": 6}


@dataclass
class ServiceFrontends:
    frontends: dict[Frontend, FrontendPolicy] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # for an event on the Service and a metric


def _algorithm(svc: Service, lb: api.LoadBalancing | None, problems: list[str]) -> Algorithm:
    if lb is not None and lb.algorithm == "least-connections":
        problems.append("TrafficPolicy loadBalancing.algorithm least-connections applies to HTTP backends of "
                        "Gateways and Ingresses only; at layer 4 new flows pick at random")
        return Algorithm.RANDOM
    if lb is not None:
        return Algorithm(algorithm_name(lb))
    value = ((svc.metadata.annotations if svc.metadata else None) or {}).get(LB_ALGORITHM)
    if value is None:
        return Algorithm.RANDOM
    try:
        return Algorithm(value)
    except ValueError:
        choices = ", ".join(a.value for a in Algorithm)
        problems.append(f"{LB_ALGORITHM}: unknown algorithm {value!r} (one of {choices}); using random")
        return Algorithm.RANDOM


@dataclass(frozen=True)
class Weights:
    """`portico.io/endpoint-weights: "pod:web-canary-=1, node:node-2=3, zone:b=2, default=10"`: an endpoint's
    weight comes from the longest pod-name prefix that matches, else its node, else its zone, else the
    default (1). 0 means no new flows (drain)."""

    rules: tuple[tuple[str, str, int], ...] = ()  # (key, value, weight)
    default: int = 1

    def of(self, pod: str | None, node: str | None, zone: str | None) -> int:
        for key, value in zip(WEIGHT_KEYS, (pod, node, zone), strict=True):
            if value is None:
                continue
            matches = [(len(v), w) for k, v, w in self.rules
                       if k == key and (value.startswith(v) if key == "pod" else value == v)]
            if matches:
                return max(matches)[1]
        return self.default


def policy_weights(lb: api.LoadBalancing) -> Weights:
    return Weights(tuple((w.kind.lower(), w.name, w.weight) for w in lb.weights), lb.defaultWeight)


def weights(text: str | None, problems: list[str]) -> Weights:
    if not text:
        return Weights()
    rules: list[tuple[str, str, int]] = []
    default = 1
    for item in (i.strip() for i in text.split(",")):
        selector, _, number = item.rpartition("=")
        key, _, value = selector.partition(":")
        valid = re.fullmatch(r"[0-9]{1,3}", number) is not None and int(number) <= MAX_WEIGHT and (
            selector == "default" or (key in WEIGHT_KEYS and value != ""))
        if not valid:
            problems.append(f"{ENDPOINT_WEIGHTS}: {item!r} is not KIND:NAME=WEIGHT (KIND pod, node or zone; "
                            f"pod names match by prefix) or default=WEIGHT, WEIGHT 0-{MAX_WEIGHT}; "
                            "all weights ignored")
            return Weights()
        if selector == "default":
            default = int(number)
        else:
            rules.append((key, value, int(number)))
    return Weights(tuple(rules), default)


def _source_ranges(ranges: Iterable[str], problems: list[str]) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for text in ranges:
        try:
            out.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            problems.append(f"spec.loadBalancerSourceRanges: {text!r} is not a CIDR; ignored")
    return tuple(out)


def _persistence(spec: ServiceSpec, persistence: api.Persistence | None,
                 problems: list[str]) -> tuple[int | None, dict[int, int]]:
    """Seconds a client stays with its backend (None: not pinned), and the client prefix length per family."""
    if persistence is not None and persistence.type == "Cookie":
        problems.append("TrafficPolicy persistence type Cookie applies to HTTP backends of Gateways and Ingresses "
                        "only; at layer 4 clients are not pinned")
        return None, {}
    if persistence is not None:
        return persistence_timeout(persistence), {4: persistence.ipv4PrefixLength, 6: persistence.ipv6PrefixLength}
    if spec.sessionAffinity != "ClientIP":
        return None, {}
    config = spec.sessionAffinityConfig
    timeout = config.clientIP.timeoutSeconds if config and config.clientIP else None
    return timeout or DEFAULT_AFFINITY_TIMEOUT, {}


def service_frontends(svc: Service, vips: Iterable[IPAddress], slices: Iterable[EndpointSlice],
                      node: str, policy: api.TrafficPolicySpec | None = None, *,
                      down: ByNode = NOBODY, gated: ByNode = NOBODY,
                      dead_nodes: frozenset[str] = frozenset()) -> ServiceFrontends:
    """`down`: endpoints the health monitors have taken out (port 0: every port of the address); `gated`:
    endpoints ready but for Portico's readiness gate (taken as ready) — both by the node that says so, believed
    only for endpoints on that node; `dead_nodes`: nodes whose heartbeats stopped (their endpoints are used only
    when no other ready one is left)."""
    spec, meta = svc.spec, svc.metadata
    assert spec is not None and meta is not None
    result = ServiceFrontends()
    name = f"{meta.namespace}/{meta.name}"
    lb = policy.loadBalancing if policy is not None else None
    algorithm = _algorithm(svc, lb, result.problems)
    ranges = _source_ranges(spec.loadBalancerSourceRanges or [], result.problems)
    if any(r.prefixlen == 0 for r in ranges):
        ranges = ()  # one that allows everyone: no filtering
    affinity, prefix = _persistence(spec, policy.persistence if policy is not None else None, result.problems)
    local_only = spec.externalTrafficPolicy == "Local"
    check = policy.healthCheck if policy is not None else None
    limits = limits_of(policy.limits) if policy is not None and policy.limits is not None else None
    weight_of = (policy_weights(lb) if lb is not None
                 else weights((meta.annotations or {}).get(ENDPOINT_WEIGHTS), result.problems))
    slices = list(slices)
    unresolved: set[str] = set()
    for port in spec.ports or []:
        protocol = (port.protocol or "TCP").lower()
        for family in (4, 6):
            backends, draining = _backends(slices, family, port_name=port.name or "", protocol=port.protocol or "TCP",
                                           local_only=local_only, node=node, weights=weight_of, unresolved=unresolved,
                                           down=down, gated=gated, dead_nodes=dead_nodes - {node})
            for vip in vips:
                if vip.version != family:
                    continue
                result.frontends[Frontend(vip, protocol, port.port)] = FrontendPolicy(
                    service=name, backends=backends, algorithm=algorithm, source_ranges=ranges,
                    affinity_timeout=affinity, affinity_prefix=_full_is_none(prefix.get(family), family),
                    terminating=draining, limits=limits)
    if check is not None and check.whenNoneHealthy == "Withdraw" and _none_healthy(result.frontends, check):
        result.frontends = {fe: dataclasses.replace(p, withdraw=True) for fe, p in result.frontends.items()}
    for port_name in sorted(unresolved):
        result.problems.append(f"port {port_name or '(unnamed)'}: some endpoints have no such port; skipped")
    return result


def _none_healthy(frontends: dict[Frontend, FrontendPolicy], check: api.HealthCheck) -> bool:
    """Whether every frontend the check covers is left without a backend (then Withdraw takes the whole VIP:
    its other ports, which the check does not probe, go with it)."""
    covered = [p for fe, p in frontends.items() if covers(check.type, check.port, fe.protocol)]
    return bool(covered) and not any(p.backends for p in covered)


def limits_of(spec: api.Limits) -> Limits | None:
    rate = spec.connectionRatePerClient
    limits = Limits(connections=spec.maxConnections, client_connections=spec.maxConnectionsPerClient,
                    client_rate=(rate.perSecond, rate.burst) if rate is not None else None,
                    bandwidth=parse_bandwidth(spec.bandwidth) // 8 if spec.bandwidth is not None else None)
    return limits if limits != Limits() else None


def _full_is_none(prefix: int | None, family: int) -> int | None:
    return None if prefix is None or prefix == (32 if family == 4 else 128) else prefix


def _backends(slices: list[EndpointSlice], family: int, *, port_name: str, protocol: str, local_only: bool,
              node: str, weights: Weights, unresolved: set[str],
              down: ByNode, gated: ByNode, dead_nodes: frozenset[str],
              ) -> tuple[tuple[Backend, ...], bool]:
    """The endpoints that take new flows, and whether they are terminating ones (none is ready)."""
    found: set[Backend] = set()  # a set: duplicate endpoints (in one slice or across slices) count once
    stranded: set[Backend] = set()  # ready, on a node whose heartbeats stopped
    draining: set[Backend] = set()  # serving but terminating: used only when no endpoint is ready (KEP-1669)
    for eps in slices:
        if FAMILY_OF_ADDRESS_TYPE.get(eps.addressType) != family:
            continue
        target = next((p.port for p in eps.ports or [] if (p.name or "") == port_name
                       and (p.protocol or "TCP") == protocol and p.port is not None), None)
        if target is None:
            if eps.endpoints:
                unresolved.add(port_name)
            continue
        for ep in eps.endpoints or []:
            conditions = ep.conditions
            ready = conditions is None or conditions.ready is None or conditions.ready
            terminating = conditions is not None and bool(conditions.terminating)
            serving = conditions is not None and (ready if conditions.serving is None else bool(conditions.serving))
            if local_only and ep.nodeName != node:
                continue
            for address in ep.addresses[:1]:  # the API allows one; more would be a bug upstream
                try:
                    ip = ipaddress.ip_address(address)
                except ValueError:
                    continue
                usable = (ready or listed(gated, ep.nodeName, ip, target)) and not terminating
                into = ((stranded if ep.nodeName in dead_nodes else found) if usable
                        else draining if serving and terminating else None)
                if into is None or listed(down, ep.nodeName, ip, target):
                    continue
                weight = weights.of(ep.targetRef.name if ep.targetRef else None, ep.nodeName, ep.zone)
                if weight:  # 0: drained (keeps its flows, takes no new ones)
                    into.add(Backend(ip, target, weight))
    # Like kube-proxy: while a rollout or scale-down leaves no ready endpoint, the terminating ones that still
    # serve take new connections rather than the Service refusing them.
    # A dead node's endpoints are used only when nothing else is ready: a wrong belief must not empty a Service.
    chosen = found or stranded or draining
    return (_in_lowest_terms(sorted(chosen, key=lambda b: (int(b.ip), b.port))),
            bool(chosen) and not found and not stranded)


def _in_lowest_terms(backends: list[Backend]) -> tuple[Backend, ...]:
    """Weights 10:20:30 need no more slots than 1:2:3."""
    divisor = math.gcd(*(b.weight for b in backends)) if backends else 1
    return tuple(Backend(b.ip, b.port, b.weight // divisor) for b in backends)


def gateway_frontends(svc: Service, vips: Iterable[IPAddress]) -> ServiceFrontends:
    """A Gateway's address Service (portico.l7.gateway_service): each port on each VIP is HAProxy's on this node."""
    key = f"{svc.metadata.namespace}/{svc.metadata.name}" if svc.metadata else ""
    ports = [p.port for p in (svc.spec.ports or []) if (p.protocol or "TCP") == "TCP"] if svc.spec else []
    return ServiceFrontends({Frontend(vip, "tcp", port): FrontendPolicy(key, (), deliver_local=True)
                             for vip in vips for port in ports})


def pool_endpoints(svc: Service, slices: Iterable[EndpointSlice], node: str, *, down: ByNode = NOBODY,
                   gated: ByNode = NOBODY, dead_nodes: frozenset[str] = frozenset()) -> dict[int, tuple[Endpoint, ...]]:
    """Each TCP Service port's endpoints as HAProxy's pools take them (L7 backendRefs): the same that would take
    new flows at L4 — ready (or gated and ready to be), healthy, on live nodes — of both families."""
    spec = svc.spec
    if spec is None:
        return {}
    slices = list(slices)
    out = {}
    for port in spec.ports or []:
        if (port.protocol or "TCP") != "TCP":
            continue
        endpoints: list[Endpoint] = []
        for family in (4, 6):
            backends, _ = _backends(slices, family, port_name=port.name or "", protocol="TCP", local_only=False,
                                    node=node, weights=Weights(), unresolved=set(), down=down, gated=gated,
                                    dead_nodes=dead_nodes)
            endpoints += [Endpoint(b.ip, b.port) for b in backends]
        out[port.port] = tuple(endpoints)
    return out
