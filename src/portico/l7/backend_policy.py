"""A TrafficPolicy on a Service that HTTP routes send to, as what HAProxy does with that Service's pool (pure).

The same policy governs the Service at layer 4 (portico.agent.desired); here its sections mean their HTTP
counterparts: `loadBalancing.algorithm` picks HAProxy's balance algorithm, `persistence` pins by client address or
by a cookie, `limits.requestRatePerClient` answers 429 over the rate. The health monitors act before this, by
taking endpoints out of the pool (portico.agent.l7).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable

from portico.api import v1alpha1 as api
from portico.api.gateway import GROUP, ObjectKey
from portico.dataplane.l7model import ClientPersistence, CookiePersistence, PoolPolicy
from portico.l7.ingress import IngressInput
from portico.l7.translate import RouteInput
from portico.policy.traffic import parse_duration, persistence_timeout

# HAProxy's algorithm for each of ours. maglev: a consistent hash of the client address (`source` with `hash-type
# consistent`); hashed per flow it is no different from random for HTTP.
SESSION_NAME = "PORTICO_SESSION"  # the cookie's name when the policy names none
BALANCE = {"random": "random", "round-robin": "roundrobin", "maglev": "source", "least-connections": "leastconn"}


def _seconds(duration: str | None) -> int | None:
    return None if duration is None else max(1, math.ceil(parse_duration(duration)))


def pool_policy(spec: api.TrafficPolicySpec) -> PoolPolicy:
    lb = spec.loadBalancing
    balance = "roundrobin" if lb is None else BALANCE[lb.algorithm]
    if lb is not None and lb.algorithm == "maglev" and lb.hashKey == "FiveTuple":
        balance = "random"
    p = spec.persistence
    persistence: CookiePersistence | ClientPersistence | None = None
    if p is not None and p.type == "Cookie":
        permanent = p.cookieConfig is not None and p.cookieConfig.lifetimeType == "Permanent"
        persistence = CookiePersistence(p.sessionName or SESSION_NAME, _seconds(p.idleTimeout),
                                        _seconds(p.absoluteTimeout), permanent)
    elif p is not None:
        persistence = ClientPersistence(persistence_timeout(p), p.ipv4PrefixLength, p.ipv6PrefixLength)
    rate = spec.limits.requestRatePerClient if spec.limits is not None else None
    return PoolPolicy(balance, persistence, None if rate is None else (rate.perSecond, rate.burst))


def http_backends(routes: Iterable[RouteInput], gateways: Collection[ObjectKey],
                  ingresses: Iterable[IngressInput]) -> set[str]:
    """The Services (namespace/name) that HTTPRoutes attached to these Gateways, or these Ingresses, send to: where
    a TrafficPolicy means something at layer 7."""
    out = set()
    for route in routes:
        if any(ref.group == GROUP and ref.kind == "Gateway"
               and ObjectKey(ref.namespace or route.key.namespace, ref.name) in gateways
               for ref in route.spec.parentRefs):
            out |= {f"{ref.namespace or route.key.namespace}/{ref.name}" for rule in route.spec.rules
                    for ref in rule.backendRefs if ref.group == "" and ref.kind == "Service"}
    for ingress in ingresses:
        backends = [ingress.spec.defaultBackend, *(path.backend for rule in ingress.spec.rules if rule.http
                                                   for path in rule.http.paths)]
        out |= {f"{ingress.key.namespace}/{b.service.name}" for b in backends if b is not None and b.service}
    return out
