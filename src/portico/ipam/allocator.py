"""Choosing addresses for Services (pure): pools, requested IPs, dual-stack, sharing.

`Allocator` mirrors what the API server holds (pools and IPAllocations) and answers one question:
which addresses should this Service have? It never changes its own view when answering; the
controller records an allocation only after the API server accepted the IPAllocation object.
A Service keeps what it has unless its own spec or annotations ask for something else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from portico.ipam.blocks import IPAddress
from portico.ipam.pools import Pool

FamilyPolicy = Literal["SingleStack", "PreferDualStack", "RequireDualStack"]


class Reason:
    """Why a Service has no (or not all of its) addresses: the condition reasons users see."""

    POOL_EXHAUSTED = "PoolExhausted"
    NO_MATCHING_POOL = "NoMatchingPool"
    REQUESTED_IP_IN_USE = "RequestedIPInUse"
    REQUESTED_IP_NOT_IN_ANY_POOL = "RequestedIPNotInAnyPool"
    INVALID_ANNOTATION = "InvalidAnnotation"
    SHARING_CONFLICT = "SharingConflict"


@dataclass(frozen=True, order=True)
class ServiceKey:
    namespace: str
    name: str
    uid: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ServicePort:
    protocol: str
    port: int


@dataclass(frozen=True)
class SharingProfile:
    """What decides whether two Services may share an address."""

    ports: frozenset[ServicePort] = frozenset()
    traffic_policy: str = "Cluster"
    selector: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Allocation:
    address: IPAddress
    pool: str
    owners: frozenset[ServiceKey]
    sharing_key: str = ""


@dataclass(frozen=True)
class Request:
    service: ServiceKey
    families: tuple[int, ...] = (4,)  # the Service's ipFamilies, in order
    policy: FamilyPolicy = "SingleStack"
    requested: tuple[IPAddress, ...] = ()
    pool: str | None = None
    sharing_key: str = ""
    profile: SharingProfile = SharingProfile()
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Assignment:
    """The addresses the Service should hold, each with its pool, in ipFamilies order."""

    addresses: tuple[tuple[IPAddress, str], ...]


@dataclass(frozen=True)
class Refusal:
    reason: str
    message: str


def sharing_conflict(new: SharingProfile, others: Iterable[tuple[ServiceKey, SharingProfile]]) -> str | None:
    """Why `new` may not share an address with `others`, or None if it may."""
    for key, other in others:
        clash = sorted(new.ports & other.ports, key=lambda p: (p.protocol, p.port))
        if clash:
            ports = ", ".join(f"{p.port}/{p.protocol}" for p in clash)
            return f"port {ports} is already used on this address by {key}"
        if new.traffic_policy != other.traffic_policy:
            return (f"externalTrafficPolicy {new.traffic_policy} differs from {key}'s "
                    f"{other.traffic_policy}")
        if new.traffic_policy == "Local" and new.selector != other.selector:
            return f"with externalTrafficPolicy Local, the pod selector must equal {key}'s"
    return None


class Allocator:
    def __init__(self) -> None:
        self.pools: dict[str, Pool] = {}
        self.allocations: dict[IPAddress, Allocation] = {}
        self.profiles: dict[ServiceKey, SharingProfile] = {}
        self._owned: dict[ServiceKey, set[IPAddress]] = {}
        self._by_sharing_key: dict[str, set[IPAddress]] = {}
        self._by_name: dict[tuple[str, str], set[ServiceKey]] = {}  # releasing a vanished Service is O(1)
        self._free_hint: dict[tuple[str, int], int] = {}  # (pool, family): no free address below this index

    # -- the mirror of the API -------------------------------------------------------------------
    def set_pool(self, pool: Pool) -> None:
        self.pools[pool.name] = pool
        self._free_hint = {k: v for k, v in self._free_hint.items() if k[0] != pool.name}

    def remove_pool(self, name: str) -> None:
        self.pools.pop(name, None)

    def record(self, allocation: Allocation) -> None:
        self.forget(allocation.address)
        self.allocations[allocation.address] = allocation
        if allocation.sharing_key:
            self._by_sharing_key.setdefault(allocation.sharing_key, set()).add(allocation.address)
        for owner in allocation.owners:
            self._owned.setdefault(owner, set()).add(allocation.address)
            self._by_name.setdefault((owner.namespace, owner.name), set()).add(owner)

    def forget(self, address: IPAddress) -> None:
        old = self.allocations.pop(address, None)
        if old is None:
            return
        for owner in old.owners:
            owned = self._owned.get(owner)
            if owned is not None:
                owned.discard(address)
                if not owned:
                    del self._owned[owner]
                    named = self._by_name[(owner.namespace, owner.name)]
                    named.discard(owner)
                    if not named:
                        del self._by_name[(owner.namespace, owner.name)]
        if old.sharing_key:
            self._by_sharing_key[old.sharing_key].discard(address)
        pool = self.pools.get(old.pool)
        hint_key = (old.pool, address.version)
        index = pool.index_of(address) if pool is not None else None
        if index is not None and hint_key in self._free_hint:
            self._free_hint[hint_key] = min(self._free_hint[hint_key], index)

    def without(self, service: ServiceKey, allocation: Allocation) -> Allocation | None:
        """`allocation` once `service` gives it up: None when nobody else holds it."""
        rest = allocation.owners - {service}
        return Allocation(allocation.address, allocation.pool, rest, allocation.sharing_key) if rest else None

    def owned_by(self, service: ServiceKey) -> list[Allocation]:
        return sorted((self.allocations[a] for a in self._owned.get(service, ())),
                      key=lambda a: (a.address.version, int(a.address)))

    def holders_named(self, namespace: str, name: str) -> list[ServiceKey]:
        """Services of this name holding addresses (more than one UID if it was recreated meanwhile)."""
        return sorted(self._by_name.get((namespace, name), ()))

    # -- the question ------------------------------------------------------------------------------
    def assign(self, request: Request) -> Assignment | Refusal:
        wanted = self._wanted_families(request)
        if isinstance(wanted, Refusal):
            return wanted
        # One address per family; if it somehow holds two (two controllers raced), every controller
        # keeps the lowest, so they converge instead of each releasing the other's choice.
        kept: dict[int, tuple[IPAddress, str]] = {}
        for a in self.owned_by(request.service):
            if self._still_wanted(a, request, wanted):
                kept.setdefault(a.address.version, (a.address, a.pool))
        if request.requested:
            return self._assign_requested(request, kept)
        missing = [f for f in wanted if f not in kept]
        if missing:
            found = self._pick(request, missing, prefer_pool=next((p for _, p in kept.values()), None))
            if isinstance(found, Refusal):
                if request.policy == "PreferDualStack" and kept:
                    return Assignment(tuple(kept[f] for f in wanted if f in kept))
                if request.policy == "PreferDualStack" and len(missing) == 2:
                    found = self._pick(request, missing[:1], prefer_pool=None)
                if isinstance(found, Refusal):
                    return found
            kept.update({a.version: (a, p) for a, p in found})
        return Assignment(tuple(kept[f] for f in wanted if f in kept))

    def _wanted_families(self, request: Request) -> tuple[int, ...] | Refusal:
        families = request.families or (4,)
        if request.requested:
            fams = [a.version for a in request.requested]
            if len(set(fams)) != len(fams):
                return Refusal(Reason.INVALID_ANNOTATION, "at most one address per IP family may be requested")
            wrong = [str(a) for a in request.requested if a.version not in families]
            if wrong:
                return Refusal(Reason.INVALID_ANNOTATION,
                               f"requested {', '.join(wrong)} is not of the Service's ipFamilies "
                               f"({', '.join(f'IPv{f}' for f in families)})")
            if request.policy == "RequireDualStack" and len(fams) < 2:
                return Refusal(Reason.INVALID_ANNOTATION,
                               "ipFamilyPolicy RequireDualStack needs one IPv4 and one IPv6 address requested")
            return tuple(f for f in families if f in fams)
        return families[:1] if request.policy == "SingleStack" else families

    def _still_wanted(self, allocation: Allocation, request: Request, wanted: tuple[int, ...]) -> bool:
        if allocation.address.version not in wanted:
            return False
        if request.requested:
            return allocation.address in request.requested
        if request.pool is not None and allocation.pool != request.pool:
            return False
        if allocation.sharing_key != request.sharing_key:
            return False
        # Its own ports or policy changed so that it clashes with its co-owners: it moves, not them.
        others = self._profiles(allocation.owners - {request.service})
        return sharing_conflict(request.profile, others) is None

    def _eligible_pools(self, request: Request) -> list[Pool] | Refusal:
        if request.pool is not None:
            pool = self.pools.get(request.pool)
            if pool is None:
                return Refusal(Reason.NO_MATCHING_POOL, f"IPPool {request.pool!r} does not exist")
            if not pool.selects(request.labels, request.namespace_labels):
                return Refusal(Reason.NO_MATCHING_POOL,
                               f"IPPool {request.pool!r} does not select this Service (serviceSelector or "
                               "namespaceSelector)")
            return [pool]
        pools = sorted((p for p in self.pools.values()
                        if p.auto_assign and p.selects(request.labels, request.namespace_labels)),
                       key=lambda p: (p.priority, p.name))
        if not pools:
            return Refusal(Reason.NO_MATCHING_POOL, "no IPPool with autoAssign selects this Service")
        return pools

    def _assign_requested(self, request: Request,
                          kept: dict[int, tuple[IPAddress, str]]) -> Assignment | Refusal:
        picks: list[tuple[IPAddress, str]] = []
        for address in request.requested:
            if address.version in kept:
                picks.append(kept[address.version])
                continue
            containing = [p for p in self.pools.values() if p.usable(address)]
            if request.pool is not None:
                containing = [p for p in containing if p.name == request.pool]
            if not containing:
                where = f"IPPool {request.pool!r}" if request.pool else "any IPPool"
                return Refusal(Reason.REQUESTED_IP_NOT_IN_ANY_POOL, f"{address} is not in {where}")
            pool = min(containing, key=lambda p: (p.priority, p.name))
            if not pool.selects(request.labels, request.namespace_labels):
                return Refusal(Reason.NO_MATCHING_POOL, f"IPPool {pool.name!r}, which holds {address}, does not "
                                                        "select this Service")
            refusal = self._may_take(request, address)
            if refusal is not None:
                return refusal
            picks.append((address, pool.name))
        return Assignment(tuple(picks))

    def _may_take(self, request: Request, address: IPAddress) -> Refusal | None:
        held = self.allocations.get(address)
        if held is None or held.owners <= {request.service}:
            return None
        holders = ", ".join(sorted(str(o) for o in held.owners))
        if not request.sharing_key or held.sharing_key != request.sharing_key:
            return Refusal(Reason.REQUESTED_IP_IN_USE, f"{address} is in use by {holders}"
                           + ("" if not held.sharing_key else f" under sharing key {held.sharing_key!r}"))
        conflict = sharing_conflict(request.profile, self._profiles(held.owners - {request.service}))
        if conflict:
            return Refusal(Reason.SHARING_CONFLICT, f"cannot share {address}: {conflict}")
        return None

    def _profiles(self, owners: Iterable[ServiceKey]) -> list[tuple[ServiceKey, SharingProfile]]:
        return [(o, self.profiles.get(o, SharingProfile())) for o in sorted(owners)]

    def _pick(self, request: Request, families: list[int],
              prefer_pool: str | None) -> list[tuple[IPAddress, str]] | Refusal:
        pools = self._eligible_pools(request)
        if isinstance(pools, Refusal):
            return pools
        pools = sorted(pools, key=lambda p: p.name != prefer_pool)  # stable: keep priority order
        with_families = [p for p in pools if all(f in p.families for f in families)]
        if not with_families:
            fams = " and ".join(f"IPv{f}" for f in families)
            return Refusal(Reason.NO_MATCHING_POOL, f"no eligible IPPool has {fams} addresses")
        for pool in with_families:
            picks = []
            for family in families:
                address = self._shared_address(request, pool, family) if request.sharing_key else None
                address = address or self._lowest_free(pool, family)
                if address is None:
                    break
                picks.append((address, pool.name))
            if len(picks) == len(families):
                return picks
        names = ", ".join(p.name for p in with_families)
        return Refusal(Reason.POOL_EXHAUSTED, f"no free address left in {names}")

    def _shared_address(self, request: Request, pool: Pool, family: int) -> IPAddress | None:
        for address in sorted(a for a in self._by_sharing_key.get(request.sharing_key, ()) if a.version == family):
            allocation = self.allocations[address]
            if (allocation.pool == pool.name
                    and sharing_conflict(request.profile, self._profiles(allocation.owners - {request.service}))
                    is None):
                return allocation.address
        return None

    def _lowest_free(self, pool: Pool, family: int) -> IPAddress | None:
        hint_key = (pool.name, family)
        for index, address in pool.candidates(family, self._free_hint.get(hint_key, 0)):
            if address not in self.allocations:
                self._free_hint[hint_key] = index
                return address
        return None
