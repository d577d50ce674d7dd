"""The Service that holds a Gateway's address: its name, manifest, owner and what it publishes."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace
from typing import Any

from lightkube.models.core_v1 import LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Service

from portico.api.gateway import GatewaySpec, GatewaySpecAddress, Listener, ObjectKey
from portico.controller.annotations import LOAD_BALANCER_CLASS, LOAD_BALANCER_IPS
from portico.l7.gateway_service import (
    UnsupportedAddress,
    desired_service,
    owning_gateway,
    published_addresses,
    requested_addresses,
    same_service,
    service_name,
)


def _gateway(name: str = "gw") -> SimpleNamespace:
    return SimpleNamespace(metadata=ObjectMeta(name=name, namespace="infra", uid="u-1", labels={"team": "a"}))


def _spec(*addresses: GatewaySpecAddress) -> GatewaySpec:
    return GatewaySpec(gatewayClassName="portico", listeners=[Listener(name="http", port=80, protocol="HTTP"),
                                                              Listener(name="https", port=443, protocol="HTTPS"),
                                                              Listener(name="b", port=80, protocol="HTTP")],
                       addresses=list(addresses))


def _live(manifest: dict[str, Any]) -> Service:
    meta = manifest["metadata"]
    return Service(
        metadata=ObjectMeta(name=meta["name"], namespace=meta["namespace"], labels=meta["labels"],
                            annotations=meta["annotations"],
                            ownerReferences=[OwnerReference(**r) for r in meta["ownerReferences"]]),
        spec=ServiceSpec(type="LoadBalancer", loadBalancerClass=LOAD_BALANCER_CLASS,
                         ports=[ServicePort(**p) for p in manifest["spec"]["ports"]],
                         ipFamilies=manifest["spec"].get("ipFamilies")),
        status=ServiceStatus(loadBalancer=LoadBalancerStatus(ingress=[LoadBalancerIngress(ip="198.18.100.7")])))


def test_names_are_dns_labels_and_long_ones_stay_unique() -> None:
    assert service_name("web.example") == "portico-gw-web-example"
    long_a, long_b = service_name("a" * 200), service_name("a" * 199 + "b")
    assert len(long_a) <= 63 and len(long_b) <= 63 and long_a != long_b
    assert not long_a.endswith("-")


def test_the_service_has_each_listener_port_once_our_class_and_the_gateway_as_owner() -> None:
    manifest = desired_service(_gateway(), _spec(), ())
    assert manifest["spec"]["type"] == "LoadBalancer"
    assert manifest["spec"]["loadBalancerClass"] == LOAD_BALANCER_CLASS
    assert [p["port"] for p in manifest["spec"]["ports"]] == [80, 443]
    assert manifest["metadata"]["labels"]["team"] == "a"  # pools' serviceSelector sees the Gateway's labels
    [owner] = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Gateway", "gw", "u-1", True)
    assert LOAD_BALANCER_IPS not in manifest["metadata"]["annotations"]


def test_requested_addresses_become_the_annotation_and_families() -> None:
    spec = _spec(GatewaySpecAddress(value="198.18.100.9"), GatewaySpecAddress(value="fd00:198:18:100::9"))
    requested = requested_addresses(spec)
    assert not isinstance(requested, UnsupportedAddress)
    manifest = desired_service(_gateway(), spec, requested)
    assert manifest["metadata"]["annotations"][LOAD_BALANCER_IPS] == "198.18.100.9,fd00:198:18:100::9"
    assert manifest["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    assert manifest["spec"]["ipFamilyPolicy"] == "RequireDualStack"


def test_unsupported_addresses_name_the_field() -> None:
    hostname = requested_addresses(_spec(GatewaySpecAddress(type="Hostname", value="lb.example")))
    assert isinstance(hostname, UnsupportedAddress) and "spec.addresses[0]" in hostname.message
    bad = requested_addresses(_spec(GatewaySpecAddress(value="not-an-ip")))
    assert isinstance(bad, UnsupportedAddress) and "'not-an-ip'" in bad.message
    two = requested_addresses(_spec(GatewaySpecAddress(value="198.18.100.1"), GatewaySpecAddress(value="198.18.100.2")))
    assert isinstance(two, UnsupportedAddress)


def test_the_live_service_is_recognised_compared_and_read() -> None:
    manifest = desired_service(_gateway(), _spec(), ())
    live = _live(manifest)
    assert owning_gateway(live) == (ObjectKey("infra", "gw"), "u-1")
    assert same_service(live, manifest)
    assert published_addresses(live) == (ipaddress.ip_address("198.18.100.7"),)
    fewer = desired_service(_gateway(), GatewaySpec(gatewayClassName="portico", listeners=[
        Listener(name="http", port=80, protocol="HTTP")]), ())
    assert not same_service(live, fewer)
    assert not same_service(None, manifest)


def test_a_service_not_labelled_by_us_is_nobodys_gateway_even_with_the_owner_reference() -> None:
    live = _live(desired_service(_gateway(), _spec(), ()))
    assert live.metadata is not None
    live.metadata.labels = {}
    assert owning_gateway(live) is None
