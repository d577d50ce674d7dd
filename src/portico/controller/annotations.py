"""Service annotations and fields Portico reads, parsed into values or errors users can act on (pure)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from portico.ipam.blocks import IPAddress

PREFIX = "portico.io/"
LOAD_BALANCER_IPS = PREFIX + "load-balancer-ips"
IP_POOL = PREFIX + "ip-pool"
ALLOW_SHARED_IP = PREFIX + "allow-shared-ip"
LOAD_BALANCER_CLASS = "portico.io/lb"
# Our own, not the cloud controllers' `service.kubernetes.io/load-balancer-cleanup`: beside another load
# balancer implementation, each removes only the finalizer it added.
FINALIZER = "portico.io/load-balancer-cleanup"

# Kubernetes object names and label values are what users will put in these annotations.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SHARING_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class InvalidAnnotation(ValueError):
    """The message names the annotation (or field) and says what is wrong with it."""


@dataclass(frozen=True)
class AddressOptions:
    requested: tuple[IPAddress, ...] = ()
    pool: str | None = None
    sharing_key: str = ""


def parse_requested_ips(value: str, source: str = LOAD_BALANCER_IPS) -> tuple[IPAddress, ...]:
    """A comma list with at most one address per family: `198.18.100.5` or `198.18.100.5,fd00:198:18:f00::5`."""
    parts = [p.strip() for p in value.split(",")]
    if not value.strip() or any(not p for p in parts):
        raise InvalidAnnotation(f"{source}: {value!r} has an empty entry; expected a comma-separated list of IPs")
    addresses: list[IPAddress] = []
    for part in parts:
        try:
            address = ipaddress.ip_address(part)
        except ValueError:
            raise InvalidAnnotation(f"{source}: {part!r} is not an IP address") from None
        if any(a.version == address.version for a in addresses):
            raise InvalidAnnotation(f"{source}: more than one IPv{address.version} address; give at most one "
                                    "per family")
        addresses.append(address)
    return tuple(addresses)


def parse_pool_name(value: str) -> str:
    name = value.strip()
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise InvalidAnnotation(f"{IP_POOL}: {value!r} is not a valid IPPool name")
    return name


def parse_sharing_key(value: str) -> str:
    key = value.strip()
    if len(key) > 253 or not _SHARING_KEY.match(key):
        raise InvalidAnnotation(f"{ALLOW_SHARED_IP}: {value!r} must be 1-253 letters, digits, '-', '_' or '.', "
                                "starting and ending with a letter or digit")
    return key


def address_options(annotations: Mapping[str, str], load_balancer_ip: str | None) -> AddressOptions:
    """What the Service asks of its addresses. Raises InvalidAnnotation naming the culprit."""
    legacy: tuple[IPAddress, ...] = ()
    if load_balancer_ip and load_balancer_ip.strip():
        legacy = parse_requested_ips(load_balancer_ip, "spec.loadBalancerIP")
        if len(legacy) > 1:
            raise InvalidAnnotation(f"spec.loadBalancerIP takes one address; use {LOAD_BALANCER_IPS} for dual-stack")
    requested = legacy
    if LOAD_BALANCER_IPS in annotations:
        requested = parse_requested_ips(annotations[LOAD_BALANCER_IPS])
        if legacy and legacy[0] not in requested:
            raise InvalidAnnotation(f"spec.loadBalancerIP: {legacy[0]} disagrees with {LOAD_BALANCER_IPS}; "
                                    "use only the annotation (spec.loadBalancerIP is deprecated)")
    pool = parse_pool_name(annotations[IP_POOL]) if IP_POOL in annotations else None
    key = parse_sharing_key(annotations[ALLOW_SHARED_IP]) if ALLOW_SHARED_IP in annotations else ""
    return AddressOptions(requested=requested, pool=pool, sharing_key=key)
