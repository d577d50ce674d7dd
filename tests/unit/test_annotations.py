"""Annotation parsing: every bad input is an InvalidAnnotation naming its source, never a crash (fuzzed)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lightkube.models.core_v1 import Service

from portico.controller.annotations import (
    ALLOW_SHARED_IP,
    IP_POOL,
    LOAD_BALANCER_IPS,
    InvalidAnnotation,
    address_options,
    parse_requested_ips,
)
from portico.controller.requests import allocation_request, is_ours


def test_requested_ips() -> None:
    assert parse_requested_ips("198.18.100.5, fd00:198:18:f00::5") == (
        ipaddress.ip_address("198.18.100.5"), ipaddress.ip_address("fd00:198:18:f00::5"))


@pytest.mark.parametrize(("value", "message"), [
    ("", "empty entry"), ("198.18.100.5,", "empty entry"), ("198.18.100.500", "not an IP address"),
    ("198.18.100.5,198.18.100.6", "more than one IPv4"), ("198.18.100.0/24", "not an IP address"),
])
def test_bad_requested_ips(value: str, message: str) -> None:
    with pytest.raises(InvalidAnnotation, match=message) as err:
        parse_requested_ips(value)
    assert str(err.value).startswith(LOAD_BALANCER_IPS)


def test_legacy_load_balancer_ip() -> None:
    assert address_options({}, "198.18.100.9").requested == (ipaddress.ip_address("198.18.100.9"),)
    both = address_options({LOAD_BALANCER_IPS: "198.18.100.9,fd00:198:18:f00::9"}, "198.18.100.9")
    assert len(both.requested) == 2
    with pytest.raises(InvalidAnnotation, match="disagrees"):
        address_options({LOAD_BALANCER_IPS: "198.18.100.8"}, "198.18.100.9")


@pytest.mark.parametrize(("annotations", "culprit"), [
    ({IP_POOL: "Bad_Pool"}, IP_POOL), ({IP_POOL: ""}, IP_POOL),
    ({ALLOW_SHARED_IP: "-x"}, ALLOW_SHARED_IP), ({ALLOW_SHARED_IP: "a b"}, ALLOW_SHARED_IP),
])
def test_bad_pool_and_sharing_key(annotations: dict[str, str], culprit: str) -> None:
    with pytest.raises(InvalidAnnotation) as err:
        address_options(annotations, None)
    assert str(err.value).startswith(culprit)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from([LOAD_BALANCER_IPS, IP_POOL, ALLOW_SHARED_IP, "other"]),
                       st.one_of(st.text(max_size=80), st.from_regex(r"[0-9a-f:.,/ -]{0,60}", fullmatch=True))),
       st.one_of(st.none(), st.text(max_size=50), st.ip_addresses().map(str)))
def test_fuzz_annotations_parse_or_explain(annotations: dict[str, str], legacy: str | None) -> None:
    try:
        options = address_options(annotations, legacy)
    except InvalidAnnotation as e:
        assert str(e).split(":")[0] in (LOAD_BALANCER_IPS, IP_POOL, ALLOW_SHARED_IP, "spec.loadBalancerIP")
        return
    assert len({a.version for a in options.requested}) == len(options.requested)


def service(**spec: object) -> Service:
    from typing import cast
    return cast(Service, Service.from_dict({"metadata": {"name": "s", "namespace": "n", "uid": "u"},
                                            "spec": {"type": "LoadBalancer", **spec}}))


def test_class_ownership() -> None:
    assert is_ours(service(loadBalancerClass="portico.io/lb"), default_class=False)
    assert not is_ours(service(loadBalancerClass="other.io/lb"), default_class=True)
    assert is_ours(service(), default_class=True) and not is_ours(service(), default_class=False)
    assert not is_ours(service(type="ClusterIP"), default_class=True)


def test_request_from_service() -> None:
    req = allocation_request(service(ipFamilies=["IPv6", "IPv4"], ipFamilyPolicy="PreferDualStack",
                                     ports=[{"port": 53, "protocol": "UDP"}], externalTrafficPolicy="Local",
                                     selector={"app": "dns"}), {"team": "a"})
    assert req.families == (6, 4) and req.policy == "PreferDualStack"
    assert req.profile.traffic_policy == "Local" and ("app", "dns") in req.profile.selector
    assert req.namespace_labels == {"team": "a"} and req.service.uid == "u"
