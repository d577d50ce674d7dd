"""Address blocks of a pool (CIDRs and ranges), and the canonical names of addresses."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class InvalidBlock(ValueError):
    pass


@dataclass(frozen=True, order=True)
class AddressRange:
    """An inclusive range of addresses of one family."""

    first: IPAddress
    last: IPAddress

    @property
    def family(self) -> int:
        return self.first.version

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __contains__(self, address: object) -> bool:
        return (isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address)
                and address.version == self.family and int(self.first) <= int(address) <= int(self.last))

    def overlaps(self, other: AddressRange) -> bool:
        return (self.family == other.family and int(self.first) <= int(other.last)
                and int(other.first) <= int(self.last))

    def addresses(self, start: int = 0) -> Iterator[IPAddress]:
        """Addresses from the `start`-th one on, lazily (a range may be an IPv6 /64)."""
        base = int(self.first)
        for offset in range(start, self.size):
            yield ipaddress.ip_address(base + offset)

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_block(text: str) -> AddressRange:
    """`198.18.100.0/24` or `198.18.100.10-198.18.100.20` (host bits in a CIDR are ignored)."""
    text = text.strip()
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return AddressRange(net.network_address, net.broadcast_address)
        first_s, sep, last_s = text.partition("-")
        if not sep:
            address = ipaddress.ip_address(text)
            return AddressRange(address, address)
        first, last = ipaddress.ip_address(first_s.strip()), ipaddress.ip_address(last_s.strip())
    except ValueError as e:
        raise InvalidBlock(f"{text!r} is not a CIDR or an address range: {e}") from None
    if first.version != last.version:
        raise InvalidBlock(f"{text!r} mixes IPv4 and IPv6")
    if int(first) > int(last):
        raise InvalidBlock(f"{text!r} ends before it starts")
    return AddressRange(first, last)


def is_buggy(address: IPAddress) -> bool:
    """IPv4 addresses ending in .0 or .255, which some clients treat as network/broadcast."""
    return address.version == 4 and int(address) & 0xFF in (0, 255)


def allocation_name(address: IPAddress) -> str:
    """The IPAllocation name of an address: DNS-safe and one per address (IPv6 fully expanded)."""
    if address.version == 4:
        return str(address).replace(".", "-")
    return address.exploded.replace(":", "-")
