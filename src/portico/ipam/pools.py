"""IP pools as plain data: their blocks, who they serve, and how addresses are counted."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from portico.api.v1alpha1 import IPPoolSpec, LabelSelector
from portico.ipam.blocks import AddressRange, InvalidBlock, IPAddress, is_buggy, parse_block
from portico.ipam.selectors import selector_matches

INT64_MAX = 2**63 - 1


class InvalidPool(ValueError):
    pass


@dataclass(frozen=True)
class Pool:
    name: str
    ranges: tuple[AddressRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    service_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    priority: int = 1000
    families: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", frozenset(r.family for r in self.ranges))

    def __contains__(self, address: object) -> bool:
        return any(address in r for r in self.ranges)

    def usable(self, address: IPAddress) -> bool:
        return address in self and not (self.avoid_buggy_ips and is_buggy(address))

    def selects(self, service_labels: Mapping[str, str], namespace_labels: Mapping[str, str]) -> bool:
        return (selector_matches(self.service_selector, service_labels)
                and selector_matches(self.namespace_selector, namespace_labels))

    def candidates(self, family: int, skip: int = 0) -> Iterator[tuple[int, IPAddress]]:
        """(index, address) of usable addresses of `family` in pool order, from index `skip` on."""
        index = 0
        for r in self.ranges:
            if r.family != family:
                continue
            if skip >= index + r.size:
                index += r.size
                continue
            start = max(0, skip - index)
            for offset, address in enumerate(r.addresses(start), start=start):
                if not (self.avoid_buggy_ips and is_buggy(address)):
                    yield index + offset, address
            index += r.size

    def index_of(self, address: IPAddress) -> int | None:
        """Position of `address` among this pool's addresses of its family (as `candidates` counts)."""
        index = 0
        for r in self.ranges:
            if r.family != address.version:
                continue
            if address in r:
                return index + int(address) - int(r.first)
            index += r.size
        return None

    def total(self, family: int) -> int:
        """Usable addresses of `family`, saturating at int64 (an IPv6 /64 is larger)."""
        count = sum(r.size for r in self.ranges if r.family == family)
        if self.avoid_buggy_ips and family == 4:
            count -= sum(1 for r in self.ranges if r.family == 4 for a in _edge_addresses(r) if is_buggy(a))
        return min(count, INT64_MAX)


def _edge_addresses(r: AddressRange) -> Iterator[IPAddress]:
    """Every .0/.255 address inside an IPv4 range, without walking the whole range."""
    first, last = int(r.first), int(r.last)
    base = first & ~0xFF
    for block in range(base, last + 1, 256):
        for candidate in (block, block + 255):
            if first <= candidate <= last:
                yield type(r.first)(candidate)


def pool_from_spec(name: str, spec: IPPoolSpec) -> Pool:
    """A Pool from its API object. Raises InvalidPool for what CEL cannot check (ordering, overlaps)."""
    ranges: list[AddressRange] = []
    for i, text in enumerate(spec.addresses):
        try:
            block = parse_block(text)
        except InvalidBlock as e:
            raise InvalidPool(f"spec.addresses[{i}]: {e}") from None
        for j, other in enumerate(ranges):
            if block.overlaps(other):
                raise InvalidPool(f"spec.addresses[{i}] ({text}) overlaps spec.addresses[{j}] ({other})")
        ranges.append(block)
    return Pool(name=name, ranges=tuple(ranges), auto_assign=spec.autoAssign, avoid_buggy_ips=spec.avoidBuggyIPs,
                service_selector=spec.serviceSelector, namespace_selector=spec.namespaceSelector,
                priority=spec.priority)


def overlapping_pools(pools: Sequence[Pool]) -> dict[str, list[str]]:
    """Pool name -> names of the other pools sharing an address with it (only pools with overlaps)."""
    conflicts: dict[str, list[str]] = {}
    for i, a in enumerate(pools):
        for b in pools[i + 1:]:
            if any(ra.overlaps(rb) for ra in a.ranges for rb in b.ranges):
                conflicts.setdefault(a.name, []).append(b.name)
                conflicts.setdefault(b.name, []).append(a.name)
    return conflicts
