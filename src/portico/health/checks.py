"""What to probe and how to judge the answer (pure).

Each agent probes the endpoints on its own node. A Service's endpoint is probed on `healthCheck.port` when
set (its result stands for the whole address), else on each target port of the Service whose protocol the
check speaks (TCP, HTTP, HTTPS: TCP ports; UDP: UDP ports); ICMP probes the address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from portico.api import v1alpha1 as api
from portico.ipam.blocks import IPAddress
from portico.policy.traffic import parse_duration

ADDRESS = 0  # the port of a result that stands for every port of the address
Endpoint = tuple[IPAddress, int]  # (address, port), port ADDRESS for the whole address
# node -> endpoints it speaks for. Each node speaks only for its own: what it says of another's is not believed.
ByNode = Mapping[str, frozenset[Endpoint]]
NOBODY: ByNode = MappingProxyType({})
BODY_BYTES = 65_536  # how much of an HTTP body bodyContains looks at


@dataclass(frozen=True)
class Check:
    """One monitor's settings, ready for the probers."""

    type: str  # TCP, HTTP, HTTPS, UDP, ICMP
    interval: float
    timeout: float
    rise: int
    fall: int
    port: int | None = None
    method: str = "GET"
    path: str = "/"
    host: str = ""
    statuses: tuple[tuple[int, int], ...] = ((200, 399),)
    body: bytes = b""  # healthy only if the body contains it
    send: bytes = b""  # UDP payload
    expect: bytes = b""  # UDP reply must contain it


def check_of(spec: api.HealthCheck) -> Check:
    http = spec.http or api.HTTPHealthCheck()
    udp = spec.udp
    return Check(
        type=spec.type, interval=parse_duration(spec.interval), timeout=parse_duration(spec.timeout),
        rise=spec.healthyThreshold, fall=spec.unhealthyThreshold, port=spec.port,
        method=http.method, path=http.path, host=http.host,
        statuses=tuple(_status_range(s) for s in http.expectedStatuses), body=http.bodyContains.encode(),
        send=udp.send.encode() if udp else b"", expect=udp.expect.encode() if udp else b"")


def _status_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def status_ok(check: Check, status: int) -> bool:
    return any(low <= status <= high for low, high in check.statuses)


@dataclass(frozen=True)
class Target:
    """One thing to probe: an endpoint of a Service, on one port (ADDRESS: for all its ports)."""

    service: str
    ip: IPAddress
    port: int  # the endpoint's port this result is for, or ADDRESS
    probe_port: int  # where the probe goes (0 for ICMP)
    pod: str = ""  # for Events
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # a target is looked up several times a probe: hashed once
        object.__setattr__(self, "_hash", hash((self.service, self.ip.packed, self.port, self.probe_port)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def endpoint(self) -> Endpoint:
        return self.ip, self.port


_PROTOCOL = {"TCP": "TCP", "HTTP": "TCP", "HTTPS": "TCP", "UDP": "UDP"}  # the Service port protocol each speaks


def covers(check_type: str, check_port: int | None, protocol: str) -> bool:
    """Whether a check's results stand for a Service port of this protocol: with its own port (or ICMP) they
    stand for the whole address, else for the ports of the protocol it speaks."""
    return check_type == "ICMP" or check_port is not None or _PROTOCOL.get(check_type) == protocol.upper()


def local_targets(service: str, check: Check, service_ports: Iterable[Any], slices: Iterable[Any],
                  node: str) -> list[Target]:
    """The ready endpoints of one Service on this node, as probe targets."""
    wanted_protocol = _PROTOCOL.get(check.type)
    port_names = {p.name or "" for p in service_ports if (p.protocol or "TCP") == wanted_protocol}
    out: dict[tuple[IPAddress, int], Target] = {}
    for eps in slices:
        if eps.addressType not in ("IPv4", "IPv6"):
            continue
        ports = [p.port for p in eps.ports or [] if (p.name or "") in port_names
                 and (p.protocol or "TCP") == wanted_protocol and p.port is not None]
        for ep in eps.endpoints or []:
            conditions = ep.conditions
            ready = conditions is None or conditions.ready is None or conditions.ready
            if ep.nodeName != node or not ready or not ep.addresses:
                continue
            try:
                ip = ipaddress.ip_address(ep.addresses[0])
            except ValueError:
                continue
            pod = ep.targetRef.name if ep.targetRef and ep.targetRef.name else ""
            if check.type == "ICMP":
                out[ip, ADDRESS] = Target(service, ip, ADDRESS, 0, pod)
            elif check.port is not None:
                out[ip, ADDRESS] = Target(service, ip, ADDRESS, check.port, pod)
            else:
                for port in ports:
                    out[ip, port] = Target(service, ip, port, port, pod)
    return sorted(out.values(), key=lambda t: (t.ip.version, int(t.ip), t.port))


def listed(by_node: ByNode, node: str | None, ip: IPAddress, port: int) -> bool:
    """Whether the node a backend is on lists it (down, or gated) by its port or its whole address."""
    endpoints = by_node.get(node or "")
    return endpoints is not None and ((ip, port) in endpoints or (ip, ADDRESS) in endpoints)
