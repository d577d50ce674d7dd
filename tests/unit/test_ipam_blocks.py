from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portico.api.v1alpha1 import IPPoolSpec, LabelSelector, LabelSelectorRequirement
from portico.ipam.blocks import InvalidBlock, allocation_name, parse_block
from portico.ipam.pools import InvalidPool, overlapping_pools, pool_from_spec
from portico.ipam.selectors import selector_matches


def test_parse_cidr_range_and_single_address() -> None:
    assert str(parse_block("198.18.100.0/30")) == "198.18.100.0-198.18.100.3"
    assert str(parse_block("198.18.100.5/30")) == "198.18.100.4-198.18.100.7"  # host bits ignored
    assert parse_block(" 198.18.100.10 - 198.18.100.20 ").size == 11
    assert parse_block("fd00:198:18:f00::/120").size == 256
    assert parse_block("198.18.100.9").size == 1


@pytest.mark.parametrize(("text", "message"), [
    ("198.18.100.20-198.18.100.10", "ends before it starts"),
    ("198.18.100.1-fd00::1", "mixes IPv4 and IPv6"),
    ("198.18.300.0/24", "not a CIDR"),
    ("", "not a CIDR"),
])
def test_bad_blocks(text: str, message: str) -> None:
    with pytest.raises(InvalidBlock, match=message):
        parse_block(text)


@given(st.ip_addresses())
def test_allocation_names_are_dns_safe_and_unique(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    name = allocation_name(address)
    assert len(name) <= 63 and name[0].isalnum() and name[-1].isalnum()
    assert all(c.isalnum() or c == "-" for c in name)
    back = name.replace("-", "." if address.version == 4 else ":")
    assert ipaddress.ip_address(back) == address  # reversible, hence unique


def test_pool_totals_and_buggy_ips() -> None:
    pool = pool_from_spec("p", IPPoolSpec(addresses=["198.18.100.0/23", "fd00:198:18:f00::/64"], avoidBuggyIPs=True))
    assert pool.total(4) == 512 - 4  # .0 and .255 of both /24s
    assert pool.total(6) == 2**63 - 1  # saturates
    addresses = [str(a) for _, a in pool.candidates(4)]
    assert addresses[0] == "198.18.100.1" and "198.18.100.255" not in addresses and "198.18.101.0" not in addresses
    assert len(addresses) == pool.total(4)
    assert pool.index_of(ipaddress.ip_address("198.18.101.1")) == 257


def test_overlaps_inside_a_pool_are_invalid_and_across_pools_are_reported() -> None:
    with pytest.raises(InvalidPool, match=r"spec.addresses\[1\] .* overlaps spec.addresses\[0\]"):
        pool_from_spec("p", IPPoolSpec(addresses=["198.18.100.0/24", "198.18.100.10-198.18.100.20"]))
    a = pool_from_spec("a", IPPoolSpec(addresses=["198.18.100.0/24"]))
    b = pool_from_spec("b", IPPoolSpec(addresses=["198.18.100.128/25"]))
    c = pool_from_spec("c", IPPoolSpec(addresses=["198.18.101.0/24"]))
    assert overlapping_pools([a, b, c]) == {"a": ["b"], "b": ["a"]}


def test_selectors() -> None:
    sel = LabelSelector(matchLabels={"tier": "web"}, matchExpressions=[
        LabelSelectorRequirement(key="env", operator="In", values=["prod", "stage"]),
        LabelSelectorRequirement(key="legacy", operator="DoesNotExist")])
    assert selector_matches(sel, {"tier": "web", "env": "prod"})
    assert not selector_matches(sel, {"tier": "web", "env": "dev"})
    assert not selector_matches(sel, {"tier": "web", "env": "prod", "legacy": "1"})
    assert selector_matches(None, {}) and selector_matches(LabelSelector(), {"any": "thing"})
