"""What HAProxy should serve, as plain data: listeners on Gateway VIPs, the route matches on each in the order they
are tried, and the pools of pod endpoints they send to. Built from Gateway API / Ingress objects (portico.l7);
rendered to HAProxy's configuration (portico.dataplane.haproxy). Nothing here knows about either side."""

from __future__ import annotations

from dataclasses import dataclass

from portico.api.gateway import HTTPRouteMatch
from portico.ipam.blocks import IPAddress


@dataclass(frozen=True)
class Endpoint:
    address: IPAddress
    port: int


@dataclass(frozen=True)
class CookiePersistence:
    """A cookie naming the endpoint, set by HAProxy; seconds are None where unbounded."""

    name: str
    idle_seconds: int | None = None
    absolute_seconds: int | None = None
    permanent: bool = False  # the cookie carries Max-Age = absolute_seconds (else it lasts the browser session)


@dataclass(frozen=True)
class ClientPersistence:
    """A client address (masked to the prefix lengths) keeps its endpoint for `seconds` after its last request."""

    seconds: int
    ipv4_prefix: int = 32
    ipv6_prefix: int = 128


@dataclass(frozen=True)
class PoolPolicy:
    """How a pool's requests pick and reach endpoints: what a TrafficPolicy on the Service says at layer 7."""

    balance: str = "roundrobin"  # HAProxy's algorithm: roundrobin, random, leastconn, source
    persistence: CookiePersistence | ClientPersistence | None = None
    request_rate: tuple[int, int] | None = None  # (per second, burst) per client address; over it: 429


@dataclass(frozen=True)
class Pool:
    """A Service port's ready endpoints. Its name is stable (namespace, Service, port), so endpoint changes are
    runtime-API updates of the same HAProxy backend, never a reload."""

    name: str
    endpoints: tuple[Endpoint, ...]
    policy: PoolPolicy = PoolPolicy()


@dataclass(frozen=True)
class HeaderEdits:
    """`set` replaces a header, `add` appends a value to it, `remove` deletes it (names case-insensitive)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewPath:
    value: str
    replace_prefix: bool  # True: the matched path prefix is replaced by `value`; False: the whole path is


@dataclass(frozen=True)
class Redirect:
    """Answered by HAProxy itself; what is unset keeps the request's (the port: the rules in
    portico.dataplane.haproxy.redirect_port)."""

    status: int
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    path: NewPath | None = None


@dataclass(frozen=True)
class Rewrite:
    hostname: str | None = None
    path: NewPath | None = None


@dataclass(frozen=True)
class Filters:
    request_headers: HeaderEdits = HeaderEdits()
    response_headers: HeaderEdits = HeaderEdits()
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None


@dataclass(frozen=True)
class WeightedPool:
    pool: str | None  # None: a backendRef that did not resolve — its share is answered 500
    weight: int
    filters: Filters = Filters()  # a backendRef's own (header edits only), applied when it is picked


@dataclass(frozen=True)
class RouteEntry:
    """One match of one route rule on one listener: the hostnames it applies to ("" = any), what the rule's
    filters and timeouts do to the request and response, and where it sends (nowhere when it redirects)."""

    hostnames: tuple[str, ...]
    match: HTTPRouteMatch
    backends: tuple[WeightedPool, ...]
    filters: Filters = Filters()
    response_timeout_ms: int | None = None  # how long the backend may take to answer; None: HAProxy's default
    listener_hostname: str = ""  # of the Gateway listener it came from (L7Listener.listener_hostnames)


@dataclass(frozen=True)
class L7Listener:
    address: IPAddress
    port: int
    protocol: str  # HTTP or HTTPS
    entries: tuple[RouteEntry, ...]  # in precedence order (portico.l7.precedence)
    certificates: tuple[str, ...] = ()  # PEM files (certificate chain + key), for HTTPS: SNI picks among them
    # The hostnames of the Gateway listeners sharing this port, most specific first ("" = none): a request
    # belongs to the first its host matches, and only entries with that listener_hostname apply to it.
    listener_hostnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class L7Config:
    listeners: tuple[L7Listener, ...]
    pools: tuple[Pool, ...]


def merge(*configs: L7Config) -> L7Config:
    """Configurations translated apart, served together: their listeners side by side (on distinct addresses),
    their pools once each (a pool's name says which Service port it is, so the same name is the same pool)."""
    pools = {p.name: p for c in configs for p in c.pools}
    return L7Config(tuple(lst for c in configs for lst in c.listeners), tuple(pools[n] for n in sorted(pools)))
