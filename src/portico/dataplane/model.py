"""What the data plane should do, as plain data: frontends (VIP, protocol, port) and their backends.

The agent builds this from Services, EndpointSlices and IPAllocations (`portico.agent.desired`);
the nftables renderer turns it into a ruleset. Nothing here knows about either side.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from portico.ipam.blocks import IPAddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
PROTOCOLS = ("tcp", "udp", "sctp")  # nftables' names for the Service protocols TCP, UDP, SCTP


class Algorithm(StrEnum):
    """How a new flow picks its backend (annotation `portico.io/lb-algorithm`)."""

    RANDOM = "random"
    ROUND_ROBIN = "round-robin"
    MAGLEV = "maglev"  # consistent hash of the client address: a client keeps its pod, on every node
    MAGLEV_5TUPLE = "maglev-5tuple"  # consistent hash of the whole flow


@dataclass(frozen=True)
class Frontend:
    """One listening tuple on a VIP. Services sharing a VIP have distinct frontends."""

    vip: IPAddress
    protocol: str  # one of PROTOCOLS
    port: int

    @property
    def family(self) -> int:
        return self.vip.version

    @property
    def sort_key(self) -> tuple[int, int, str, int]:
        return self.vip.version, int(self.vip), self.protocol, self.port

    def __str__(self) -> str:
        host = f"[{self.vip}]" if self.vip.version == 6 else str(self.vip)
        return f"{host}:{self.port}/{self.protocol}"


@dataclass(frozen=True, order=True)
class Backend:
    """A ready endpoint: pod address and the resolved target port."""

    ip: IPAddress
    port: int
    weight: int = 1

    @property
    def name(self) -> str:
        """Identity for consistent hashing: the same on every node."""
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class Limits:
    """What a frontend takes at most, enforced in the kernel on each node (a TrafficPolicy's `limits`)."""

    connections: int | None = None  # concurrent, over all clients
    client_connections: int | None = None  # concurrent, per client address
    client_rate: tuple[int, int] | None = None  # new connections a second per client address, and the burst
    bandwidth: int | None = None  # bytes a second, each direction


@dataclass(frozen=True)
class FrontendPolicy:
    """Everything about one frontend that shapes its rules."""

    service: str  # "namespace/name", for metrics and events
    backends: tuple[Backend, ...]  # only those that may take new flows, sorted
    algorithm: Algorithm = Algorithm.RANDOM
    source_ranges: tuple[IPNetwork, ...] = ()  # empty: everyone
    affinity_timeout: int | None = None  # sessionAffinity ClientIP (or a policy's persistence), seconds
    affinity_prefix: int | None = None  # clients in one network of this length share a pin; None: per address
    terminating: bool = False  # no endpoint is ready: the backends are terminating ones that still serve
    withdraw: bool = False  # no healthy backend for its Service, whose policy says to stop announcing, not refuse
    limits: Limits | None = None
    deliver_local: bool = False  # HAProxy on this node serves it (a Gateway's address): delivered, never DNATed


@dataclass(frozen=True)
class DesiredState:
    frontends: dict[Frontend, FrontendPolicy] = field(default_factory=dict)
    local_pod_cidrs: tuple[IPNetwork, ...] = ()  # this node's pods: reached without SNAT
