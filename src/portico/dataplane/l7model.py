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
class Pool:
    """A Service port's ready endpoints. Its name is stable (namespace, Service, port), so endpoint changes are
    runtime-API updates of the same HAProxy backend, never a reload."""

    name: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class WeightedPool:
    pool: str | None  # None: a backendRef that did not resolve — its share is answered 500
    weight: int


@dataclass(frozen=True)
class RouteEntry:
    """One match of one route rule on one listener: the hostnames it applies to ("" = any) and where it sends."""

    hostnames: tuple[str, ...]
    match: HTTPRouteMatch
    backends: tuple[WeightedPool, ...]


@dataclass(frozen=True)
class L7Listener:
    address: IPAddress
    port: int
    protocol: str  # HTTP or HTTPS
    entries: tuple[RouteEntry, ...]  # in precedence order (portico.l7.precedence)
    certificates: tuple[str, ...] = ()  # PEM files (certificate chain + key), for HTTPS: SNI picks among them


@dataclass(frozen=True)
class L7Config:
    listeners: tuple[L7Listener, ...]
    pools: tuple[Pool, ...]
