"""Portico's generated CRDs on the real API server: defaults, printer columns, CEL rejections."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.types import PatchType

from portico.api.crds import CRD_DIR
from portico.api.resources import (
    BGPAdvertisementResource,
    BGPPeerResource,
    IPAllocationResource,
    IPPoolResource,
    L2AdvertisementResource,
)
from portico.dev.controlplane import ControlPlaneConfig
from portico.kube.crds import ensure_crd


async def install_crds(client: AsyncClient) -> None:
    for path in sorted(CRD_DIR.glob("*.yaml")):
        await ensure_crd(client, yaml.safe_load(path.read_text()))


@pytest.fixture
async def crds(client: AsyncClient) -> AsyncIterator[AsyncClient]:
    await install_crds(client)
    yield client


def pool(spec: dict[str, Any]) -> Any:
    return IPPoolResource(metadata=ObjectMeta(name=f"pool-{uuid.uuid4().hex[:8]}"), spec=spec)


async def test_valid_pool_gets_defaults(crds: AsyncClient) -> None:
    created = await crds.create(pool({"addresses": ["198.18.100.0/24", "fd00:198:18:f00::/120",
                                                    "198.18.101.10-198.18.101.20"]}))
    assert created.spec["autoAssign"] is True and created.spec["avoidBuggyIPs"] is False
    assert created.spec["priority"] == 1000
    await crds.delete(IPPoolResource, created.metadata.name)


async def test_a_selector_may_spell_exists_without_values(crds: AsyncClient) -> None:
    """As every Kubernetes selector may (the conformance setup's pool does)."""
    created = await crds.create(pool({"addresses": ["198.18.100.0/24"], "namespaceSelector": {
        "matchExpressions": [{"key": "gateway-conformance", "operator": "Exists"}]}}))
    assert created.spec["namespaceSelector"]["matchExpressions"][0]["operator"] == "Exists"
    await crds.delete(IPPoolResource, created.metadata.name)


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({"addresses": ["198.18.100.0/33"]}, "spec.addresses[0]", "must be a CIDR"),
    ({"addresses": ["198.18.100.0/24", "not-an-address"]}, "spec.addresses[1]", "must be a CIDR"),
    ({"addresses": ["198.18.100.1-fd00:198:18::1"]}, "spec.addresses[0]", "range of one IP family"),
    ({"addresses": []}, "spec.addresses", "should have at least 1 items"),
    ({"addresses": ["198.18.100.0/24"], "priority": -1}, "spec.priority", "should be greater than or equal to 0"),
    ({"addresses": ["198.18.100.0/24"], "serviceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "spec.serviceSelector.matchExpressions", "In and NotIn need values"),
])
async def test_bad_pool_is_rejected_naming_the_field(crds: AsyncClient, spec: dict[str, Any], field: str,
                                                     message: str) -> None:
    with pytest.raises(ApiError) as err:
        await crds.create(pool(spec))
    assert err.value.status.code == 422
    text = err.value.status.message or ""
    assert f"{field}:" in text and message in text, text


PEER = {"peerAddress": "198.18.0.254", "peerASN": 64512, "myASN": 64513}


async def test_announcement_objects_get_defaults(crds: AsyncClient) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    peer = await crds.create(BGPPeerResource(metadata=ObjectMeta(name=name), spec={
        **PEER, "passwordSecret": {"name": "bgp"}}))
    assert (peer.spec["peerPort"], peer.spec["holdTime"], peer.spec["keepaliveTime"]) == (179, 90, 30)
    assert peer.spec["passwordSecret"] == {"name": "bgp", "namespace": "portico-system", "key": "password"}
    adv = await crds.create(BGPAdvertisementResource(metadata=ObjectMeta(name=name), spec={
        "communities": ["65000:100", "65000:1:2", "no-export"], "localPref": 200}))
    assert (adv.spec["aggregationLength"], adv.spec["aggregationLengthV6"]) == (32, 128)
    l2 = await crds.create(L2AdvertisementResource(metadata=ObjectMeta(name=name), spec={"interfaces": ["eth0"]}))
    assert l2.spec == {"interfaces": ["eth0"]}  # no pools named: every pool
    for resource in (BGPPeerResource, BGPAdvertisementResource, L2AdvertisementResource):
        await crds.delete(resource, name)


@pytest.mark.parametrize(("resource", "spec", "field", "message"), [
    (BGPPeerResource, {**PEER, "peerAddress": "router"}, "spec.peerAddress", "must be an IP address"),
    (BGPPeerResource, {**PEER, "peerASN": 0}, "spec.peerASN", "should be greater than or equal to 1"),
    (BGPPeerResource, {**PEER, "myASN": 4294967295}, "spec.myASN", "should be less than or equal to 4294967294"),
    (BGPPeerResource, {**PEER, "holdTime": 2}, "spec.holdTime", "must be 0 or at least 3 seconds"),
    (BGPPeerResource, {**PEER, "holdTime": 9, "keepaliveTime": 4}, "spec.keepaliveTime",
     "at most a third of holdTime"),
    (BGPAdvertisementResource, {"communities": ["65000:70000"]}, "spec.communities[0]", "must be a community"),
    (BGPAdvertisementResource, {"communities": ["65000"]}, "spec.communities[0]", "must be a community"),
    (BGPAdvertisementResource, {"aggregationLength": 33}, "spec.aggregationLength",
     "should be less than or equal to 32"),
    (L2AdvertisementResource, {"interfaces": ["a-name-too-long-for-linux"]}, "spec.interfaces[0]",
     "may not be more than 15 bytes"),
])
async def test_bad_announcement_objects_are_rejected_naming_the_field(
        crds: AsyncClient, resource: Any, spec: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ApiError) as err:
        await crds.create(resource(metadata=ObjectMeta(name=f"t-{uuid.uuid4().hex[:8]}"), spec=spec))
    assert err.value.status.code == 422
    text = err.value.status.message or ""
    assert f"{field}:" in text and message in text, text


async def test_allocation_address_is_immutable(crds: AsyncClient) -> None:
    alloc = IPAllocationResource(metadata=ObjectMeta(name="198-18-100-7"), spec={
        "address": "198.18.100.7", "pool": "p", "services": [{"namespace": "n", "name": "s", "uid": "u"}]})
    await crds.create(alloc)
    try:
        with pytest.raises(ApiError) as err:
            await crds.patch(IPAllocationResource, "198-18-100-7", {"spec": {"address": "198.18.100.8"}},
                             patch_type=PatchType.MERGE)
        assert "spec.address: Invalid value" in (err.value.status.message or "")
        assert "address is immutable" in (err.value.status.message or "")
    finally:
        await crds.delete(IPAllocationResource, "198-18-100-7")


async def test_printer_columns(crds: AsyncClient, controlplane: ControlPlaneConfig) -> None:
    created = await crds.create(pool({"addresses": ["198.18.102.0/24"]}))
    argv = ["kubectl", "--kubeconfig", str(controlplane.admin_kubeconfig), "get", "ippools", created.metadata.name]
    out = (await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, check=True)).stdout
    header = out.splitlines()[0].split()
    assert header[:4] == ["NAME", "ADDRESSES", "AUTO", "PRIORITY"]
    assert "198.18.102.0/24" in out
    await crds.delete(IPPoolResource, created.metadata.name)
