"""The allocator, exhaustively: pools, priority, requested IPs, dual-stack, sharing, and properties."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portico.api.v1alpha1 import IPPoolSpec, LabelSelector
from portico.ipam.allocator import (
    Allocation,
    Allocator,
    Assignment,
    Reason,
    Refusal,
    Request,
    ServiceKey,
    ServicePort,
    SharingProfile,
)
from portico.ipam.pools import pool_from_spec


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def svc(name: str) -> ServiceKey:
    return ServiceKey("default", name, f"uid-{name}")


def allocator(*pools: tuple[str, dict[str, Any]]) -> Allocator:
    alloc = Allocator()
    for name, spec in pools:
        alloc.set_pool(pool_from_spec(name, IPPoolSpec(**spec)))
    return alloc


def take(alloc: Allocator, request: Request) -> tuple[str, ...]:
    """Assign and record, as the controller does once the API accepted the IPAllocation."""
    result = alloc.assign(request)
    assert isinstance(result, Assignment), result
    keep = {a for a, _ in result.addresses}
    release(alloc, request.service, keep)
    for address, pool in result.addresses:
        held = alloc.allocations.get(address)
        owners = (held.owners if held else frozenset()) | {request.service}
        alloc.record(Allocation(address, pool, owners, request.sharing_key))
    alloc.profiles[request.service] = request.profile
    return tuple(str(a) for a, _ in result.addresses)


def release(alloc: Allocator, service: ServiceKey, keep: set[Any] | None = None) -> None:
    """Give up addresses (all, or all but `keep`), as the controller does on the API."""
    for old in alloc.owned_by(service):
        if keep is None or old.address not in keep:
            alloc.forget(old.address)
            rest = alloc.without(service, old)
            if rest is not None:
                alloc.record(rest)


def refused(alloc: Allocator, request: Request) -> Refusal:
    result = alloc.assign(request)
    assert isinstance(result, Refusal), result
    return result


def test_lowest_free_address_in_order_and_stable() -> None:
    alloc = allocator(("p", {"addresses": ["198.18.100.0/30"]}))
    assert take(alloc, Request(svc("a"))) == ("198.18.100.0",)
    assert take(alloc, Request(svc("b"))) == ("198.18.100.1",)
    assert take(alloc, Request(svc("a"))) == ("198.18.100.0",)  # keeps what it has
    alloc.forget(ip("198.18.100.0"))
    assert take(alloc, Request(svc("c"))) == ("198.18.100.0",)  # released addresses are reused


def test_exhaustion_names_the_pool() -> None:
    alloc = allocator(("small", {"addresses": ["198.18.100.1-198.18.100.2"]}))
    take(alloc, Request(svc("a")))
    take(alloc, Request(svc("b")))
    r = refused(alloc, Request(svc("c")))
    assert r.reason == Reason.POOL_EXHAUSTED and "small" in r.message


def test_priority_then_name_and_fallthrough_when_full() -> None:
    alloc = allocator(("b-low", {"addresses": ["198.18.101.0/31"], "priority": 10}),
                      ("a-low", {"addresses": ["198.18.102.0/31"], "priority": 10}),
                      ("high", {"addresses": ["198.18.100.0/32"], "priority": 1}))
    assert take(alloc, Request(svc("s1"))) == ("198.18.100.0",)
    assert take(alloc, Request(svc("s2"))) == ("198.18.102.0",)  # tie on priority: by name
    assert take(alloc, Request(svc("s3"))) == ("198.18.102.1",)
    assert take(alloc, Request(svc("s4"))) == ("198.18.101.0",)


def test_auto_assign_off_and_selectors() -> None:
    alloc = allocator(("manual", {"addresses": ["198.18.100.0/24"], "autoAssign": False}),
                      ("web", {"addresses": ["198.18.101.0/24"],
                               "serviceSelector": LabelSelector(matchLabels={"tier": "web"})}),
                      ("team-a", {"addresses": ["198.18.102.0/24"],
                                  "namespaceSelector": LabelSelector(matchLabels={"team": "a"})}))
    assert refused(alloc, Request(svc("x"))).reason == Reason.NO_MATCHING_POOL
    assert take(alloc, Request(svc("w"), labels={"tier": "web"})) == ("198.18.101.0",)
    assert take(alloc, Request(svc("t"), namespace_labels={"team": "a"})) == ("198.18.102.0",)
    assert take(alloc, Request(svc("m"), pool="manual")) == ("198.18.100.0",)  # named explicitly
    r = refused(alloc, Request(svc("n"), pool="web"))
    assert r.reason == Reason.NO_MATCHING_POOL and "does not select" in r.message
    assert refused(alloc, Request(svc("z"), pool="nope")).message == "IPPool 'nope' does not exist"


def test_requested_addresses() -> None:
    alloc = allocator(("p", {"addresses": ["198.18.100.0/24", "fd00:198:18:f00::/120"], "autoAssign": False}))
    assert take(alloc, Request(svc("a"), requested=(ip("198.18.100.50"),))) == ("198.18.100.50",)
    r = refused(alloc, Request(svc("b"), requested=(ip("198.18.100.50"),)))
    assert r.reason == Reason.REQUESTED_IP_IN_USE and "default/a" in r.message
    r = refused(alloc, Request(svc("c"), requested=(ip("198.18.200.1"),)))
    assert r.reason == Reason.REQUESTED_IP_NOT_IN_ANY_POOL
    r = refused(alloc, Request(svc("d"), requested=(ip("fd00:198:18:f00::5"),), families=(4,)))
    assert r.reason == Reason.INVALID_ANNOTATION and "ipFamilies" in r.message
    # Changing the request moves the Service: it asked for it.
    assert take(alloc, Request(svc("a"), requested=(ip("198.18.100.51"),))) == ("198.18.100.51",)


def test_buggy_ips_are_never_given_even_on_request() -> None:
    alloc = allocator(("p", {"addresses": ["198.18.100.0/24"], "avoidBuggyIPs": True}))
    assert take(alloc, Request(svc("a"))) == ("198.18.100.1",)
    assert refused(alloc, Request(svc("b"), requested=(ip("198.18.100.255"),))).reason == \
        Reason.REQUESTED_IP_NOT_IN_ANY_POOL


def test_dual_stack_policies() -> None:
    alloc = allocator(("v4only", {"addresses": ["198.18.100.0/24"], "priority": 1}),
                      ("dual", {"addresses": ["198.18.101.0/24", "fd00:198:18:f00::/120"], "priority": 2}))
    both = (4, 6)
    assert take(alloc, Request(svc("single"), families=(6, 4))) == ("fd00:198:18:f00::",)
    assert take(alloc, Request(svc("req"), families=both, policy="RequireDualStack")) == \
        ("198.18.101.0", "fd00:198:18:f00::1")  # one pool holds both
    assert take(alloc, Request(svc("pref"), families=both, policy="PreferDualStack")) == \
        ("198.18.101.1", "fd00:198:18:f00::2")
    v4 = allocator(("v4only", {"addresses": ["198.18.100.0/24"]}))
    assert take(v4, Request(svc("pref"), families=both, policy="PreferDualStack")) == ("198.18.100.0",)
    r = refused(v4, Request(svc("req"), families=both, policy="RequireDualStack"))
    assert r.reason == Reason.NO_MATCHING_POOL and "IPv4 and IPv6" in r.message
    r = refused(alloc, Request(svc("x"), families=both, policy="RequireDualStack",
                               requested=(ip("198.18.101.9"),)))
    assert r.reason == Reason.INVALID_ANNOTATION


def test_prefer_dual_stack_adds_the_second_family_when_it_appears() -> None:
    alloc = allocator(("p", {"addresses": ["198.18.100.0/24"]}))
    req = Request(svc("a"), families=(4, 6), policy="PreferDualStack")
    assert take(alloc, req) == ("198.18.100.0",)
    alloc.set_pool(pool_from_spec("p", IPPoolSpec(addresses=["198.18.100.0/24", "fd00:198:18:f00::/120"])))
    assert take(alloc, req) == ("198.18.100.0", "fd00:198:18:f00::")  # keeps its IPv4


HTTP = SharingProfile(ports=frozenset({ServicePort("TCP", 80)}))
DNS_UDP = SharingProfile(ports=frozenset({ServicePort("UDP", 53)}))
DNS_TCP = SharingProfile(ports=frozenset({ServicePort("TCP", 53)}))


def test_sharing_by_key_with_compatible_ports() -> None:
    alloc = allocator(("p", {"addresses": ["198.18.100.0/24"]}))
    a = take(alloc, Request(svc("udp"), sharing_key="dns", profile=DNS_UDP))
    assert take(alloc, Request(svc("tcp"), sharing_key="dns", profile=DNS_TCP)) == a  # TCP+UDP on one port
    assert take(alloc, Request(svc("web"), sharing_key="dns", profile=HTTP)) == a
    assert take(alloc, Request(svc("other"), sharing_key="other", profile=HTTP)) != a  # other key, other IP
    assert take(alloc, Request(svc("clash"), sharing_key="dns", profile=HTTP)) != a  # port 80 taken


def test_requested_shared_address_refusals() -> None:
    alloc = allocator(("p", {"addresses": ["198.18.100.0/24"]}))
    address = ip("198.18.100.7")
    take(alloc, Request(svc("a"), requested=(address,), sharing_key="k", profile=HTTP))
    r = refused(alloc, Request(svc("b"), requested=(address,), sharing_key="k", profile=HTTP))
    assert r.reason == Reason.SHARING_CONFLICT and "port 80/TCP" in r.message
    r = refused(alloc, Request(svc("c"), requested=(address,), sharing_key="k",
                               profile=SharingProfile(ports=DNS_TCP.ports, traffic_policy="Local")))
    assert r.reason == Reason.SHARING_CONFLICT and "externalTrafficPolicy" in r.message
    r = refused(alloc, Request(svc("d"), requested=(address,), sharing_key="other", profile=DNS_TCP))
    assert r.reason == Reason.REQUESTED_IP_IN_USE and "sharing key 'k'" in r.message
    assert take(alloc, Request(svc("e"), requested=(address,), sharing_key="k", profile=DNS_TCP)) == (str(address),)


def test_local_policy_sharing_needs_same_selector() -> None:
    alloc = allocator(("p", {"addresses": ["198.18.100.0/24"]}))
    local_a = SharingProfile(ports=HTTP.ports, traffic_policy="Local", selector=frozenset({("app", "a")}))
    local_b = SharingProfile(ports=DNS_TCP.ports, traffic_policy="Local", selector=frozenset({("app", "b")}))
    first = take(alloc, Request(svc("a"), sharing_key="k", profile=local_a))
    assert take(alloc, Request(svc("b"), sharing_key="k", profile=local_b)) != first


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["take", "release"]), st.integers(0, 15),
                          st.sampled_from(["", "k1", "k2"]), st.sampled_from([80, 443, 53])), max_size=60))
def test_properties_no_address_twice_and_always_in_an_eligible_pool(
        ops: list[tuple[str, int, str, int]]) -> None:
    alloc = allocator(("a", {"addresses": ["198.18.100.0/29"], "priority": 1}),
                      ("b", {"addresses": ["198.18.101.0-198.18.101.3"], "avoidBuggyIPs": True}))
    holders: dict[ServiceKey, tuple[Request, tuple[str, ...]]] = {}
    for op, n, key, port in ops:
        service = svc(f"s{n}")
        if op == "release":
            release(alloc, service)
            holders.pop(service, None)
            continue
        profile = SharingProfile(ports=frozenset({ServicePort("TCP", port)}))
        request = Request(service, sharing_key=key, profile=profile)
        result = alloc.assign(request)
        if isinstance(result, Refusal):
            assert result.reason == Reason.POOL_EXHAUSTED
            continue
        before = holders.get(service)
        got = take(alloc, request)
        if before is not None and before[0] == request:
            assert got == before[1]  # the same request keeps the same address
        holders[service] = (request, got)
        for address, pool in result.addresses:
            assert address in alloc.pools[pool]
            assert not (address.version == 4 and pool == "b" and int(address) & 0xFF in (0, 255))
    # No address is held by two Services unless they share a key and their ports differ.
    for allocation in alloc.allocations.values():
        if len(allocation.owners) > 1:
            assert allocation.sharing_key
            ports = [p for o in allocation.owners for p in alloc.profiles[o].ports]
            assert len(ports) == len(set(ports))


@pytest.mark.parametrize("count", [1000])
def test_large_pool_stays_linear(count: int) -> None:
    alloc = allocator(("big", {"addresses": ["198.18.0.0/16"]}))
    for i in range(count):
        take(alloc, Request(svc(f"s{i}")))
    assert len(alloc.allocations) == count
    assert str(max(alloc.allocations)) == "198.18.3.231"  # dense from the start


def test_a_service_holding_two_addresses_of_one_family_keeps_the_lowest() -> None:
    # Two controllers without leader election can each give a Service an address; both must agree.
    alloc = allocator(("p", {"addresses": ["198.18.100.0/24"]}))
    a = svc("a")
    for address in ("198.18.100.9", "198.18.100.4"):
        alloc.record(Allocation(ip(address), "p", frozenset({a})))
    result = alloc.assign(Request(a))
    assert isinstance(result, Assignment) and [str(x) for x, _ in result.addresses] == ["198.18.100.4"]


def test_holders_by_name_follow_records_and_releases() -> None:
    alloc = allocator(("p", {"addresses": ["198.18.100.0/24"]}))
    old, new = ServiceKey("ns", "web", "uid-1"), ServiceKey("ns", "web", "uid-2")  # recreated Service
    take(alloc, Request(old))
    take(alloc, Request(new))
    assert alloc.holders_named("ns", "web") == [old, new]
    release(alloc, old)
    assert alloc.holders_named("ns", "web") == [new]
    release(alloc, new)
    assert alloc.holders_named("ns", "web") == [] and alloc.holders_named("ns", "other") == []
