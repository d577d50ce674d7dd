"""The controller against the real API server: allocation, release, requests, pools, dual-stack, sharing."""

from __future__ import annotations

import ipaddress
import json

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from portico.api.resources import IPAllocationResource, IPPoolResource
from portico.controller.annotations import ALLOW_SHARED_IP, FINALIZER, IP_POOL, LOAD_BALANCER_IPS
from tests.integration.controller_helpers import Scope, allocations_of, wait_until

pytestmark = pytest.mark.usefixtures("controller")


async def test_allocates_writes_status_and_releases_on_delete(client: AsyncClient) -> None:
    async with Scope(client) as s:
        pool = await s.pool(["198.18.110.0/29"])
        svc = await s.service("web")
        assert await s.wait_ingress("web") == ["198.18.110.0"]
        got = await s.get("web")
        assert got.status is not None and got.status.loadBalancer is not None
        assert [(i.ip, i.ipMode) for i in got.status.loadBalancer.ingress or []] == [("198.18.110.0", "VIP")]
        assert FINALIZER in (got.metadata.finalizers or [])
        cond = await s.condition("web")
        assert cond is not None and (cond["status"], cond["reason"]) == ("True", "Assigned")
        allocation = await client.get(IPAllocationResource, "198-18-110-0")
        assert allocation.spec["pool"] == pool
        assert allocation.spec["services"] == [{"namespace": s.ns, "name": "web", "uid": svc.metadata.uid}]
        assert (await s.wait_event("web", "IPAllocated"))[0] == "Normal"

        await client.delete(Service, "web", namespace=s.ns)
        await wait_until(lambda: _gone(client, s.ns, "web"), 10, "service deleted (finalizer removed)")
        assert await allocations_of(client, svc.metadata.uid) == []


async def _gone(client: AsyncClient, ns: str, name: str) -> bool:
    try:
        await client.get(Service, name, namespace=ns)
    except ApiError as e:
        return e.status.code == 404
    return False


async def test_type_change_away_from_load_balancer_releases(client: AsyncClient) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.110.8/29"])
        svc = await s.service("web")
        await s.wait_ingress("web")
        await client.patch(Service, "web", {"spec": {"type": "ClusterIP", "loadBalancerClass": None}},
                           namespace=s.ns, patch_type=PatchType.MERGE)
        async def released() -> bool:
            got = await s.get("web")
            return (not await s.ingress("web") and FINALIZER not in (got.metadata.finalizers or [])
                    and await s.condition("web") is None and not await allocations_of(client, svc.metadata.uid))
        await wait_until(released, 10, "release after type change")
        await s.wait_event("web", "IPReleased")


async def test_another_load_balancers_finalizer_is_left_alone(client: AsyncClient) -> None:
    """Beside a cloud controller or another implementation, Portico removes only the finalizer it added."""
    theirs = "service.kubernetes.io/load-balancer-cleanup"  # what cloud service controllers add
    async with Scope(client) as s:
        await s.pool(["198.18.110.24/29"])
        await s.service("theirs", loadBalancerClass="example.com/other")
        await client.patch(Service, "theirs", {"metadata": {"finalizers": [theirs]}}, namespace=s.ns,
                           patch_type=PatchType.MERGE)
        await s.service("ours")  # reconciled after "theirs": once it has its address, "theirs" was seen twice
        await s.wait_ingress("ours")
        await client.patch(Service, "theirs", {"metadata": {"labels": {"touched": "yes"}}}, namespace=s.ns,
                           patch_type=PatchType.MERGE)
        await s.service("ours-too")
        await s.wait_ingress("ours-too")
        assert (await s.get("theirs")).metadata.finalizers == [theirs]
        assert theirs not in ((await s.get("ours")).metadata.finalizers or [])
        await client.patch(Service, "theirs", {"metadata": {"finalizers": None}}, namespace=s.ns,
                           patch_type=PatchType.MERGE)  # the other implementation's job, done for it


async def test_other_classes_are_left_alone_and_class_is_immutable(client: AsyncClient) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.110.16/29"])
        await s.service("theirs", loadBalancerClass="example.com/other")
        await s.service("classless", loadBalancerClass=None)  # not ours: started without --default-class
        await s.service("ours")
        await s.wait_ingress("ours")
        for name in ("theirs", "classless"):
            got = await s.get(name)
            assert not await s.ingress(name) and not got.metadata.finalizers
        with pytest.raises(ApiError) as err:
            await client.patch(Service, "ours", {"spec": {"loadBalancerClass": "example.com/other"}},
                               namespace=s.ns, patch_type=PatchType.MERGE)
        assert "spec.loadBalancerClass" in (err.value.status.message or "")
        assert await s.ingress("ours") == ["198.18.110.16"]


async def test_requested_addresses_and_their_refusals(client: AsyncClient) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.110.32/28"], autoAssign=False)
        await s.service("a", annotations={LOAD_BALANCER_IPS: "198.18.110.40"})
        assert await s.wait_ingress("a") == ["198.18.110.40"]
        await s.service("legacy", loadBalancerIP="198.18.110.41")
        assert await s.wait_ingress("legacy") == ["198.18.110.41"]

        await s.service("dup", annotations={LOAD_BALANCER_IPS: "198.18.110.40"})
        cond = await s.wait_reason("dup", "RequestedIPInUse")
        assert cond["status"] == "False" and f"{s.ns}/a" in cond["message"]
        await s.service("outside", annotations={LOAD_BALANCER_IPS: "198.18.200.1"})
        await s.wait_reason("outside", "RequestedIPNotInAnyPool")
        await s.service("family", annotations={LOAD_BALANCER_IPS: "fd00:198:18:f00::1"})
        assert "ipFamilies" in (await s.wait_reason("family", "InvalidAnnotation"))["message"]
        await s.service("garbage", annotations={LOAD_BALANCER_IPS: "not-an-ip"})
        cond = await s.wait_reason("garbage", "InvalidAnnotation")
        assert cond["message"] == f"{LOAD_BALANCER_IPS}: 'not-an-ip' is not an IP address"
        kind, message = await s.wait_event("garbage", "AllocationFailed")
        assert kind == "Warning" and "not-an-ip" in message
        for name in ("dup", "outside", "family", "garbage"):
            assert not await s.ingress(name)
        # Bad neighbours disturbed nobody.
        assert await s.ingress("a") == ["198.18.110.40"] and await s.ingress("legacy") == ["198.18.110.41"]

        # Fixing the annotation is enough: the Service gets its address.
        await client.patch(Service, "garbage", {"metadata": {"annotations": {LOAD_BALANCER_IPS: "198.18.110.42"}}},
                           namespace=s.ns, patch_type=PatchType.MERGE)
        assert await s.wait_ingress("garbage") == ["198.18.110.42"]


async def test_pool_choice_by_name_and_priority(client: AsyncClient) -> None:
    async with Scope(client) as s:
        low = await s.pool(["198.18.111.0/30"], priority=20)
        await s.pool(["198.18.111.8/30"], priority=10)
        manual = await s.pool(["198.18.111.16/30"], autoAssign=False)
        await s.service("first")
        assert await s.wait_ingress("first") == ["198.18.111.8"]
        await s.service("named", annotations={IP_POOL: low})
        assert await s.wait_ingress("named") == ["198.18.111.0"]
        await s.service("manual", annotations={IP_POOL: manual})
        assert await s.wait_ingress("manual") == ["198.18.111.16"]
        await s.service("missing", annotations={IP_POOL: "no-such-pool"})
        assert "does not exist" in (await s.wait_reason("missing", "NoMatchingPool"))["message"]


async def test_no_pool_selects_the_namespace(client: AsyncClient) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.111.32/30"], namespaceSelector={"matchLabels": {"scope": "elsewhere"}})
        await s.service("lonely")
        await s.wait_reason("lonely", "NoMatchingPool")


async def test_dual_stack(client: AsyncClient) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.112.0/30", "fd00:198:18:f12::/126"])
        await s.service("both", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
        assert await s.wait_ingress("both", 2) == ["198.18.112.0", "fd00:198:18:f12::"]
        await s.service("v6first", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv6", "IPv4"])
        assert await s.wait_ingress("v6first", 2) == ["fd00:198:18:f12::1", "198.18.112.1"]
        await s.service("v6only", ipFamilies=["IPv6"])
        ips = await s.wait_ingress("v6only")
        assert ipaddress.ip_address(ips[0]).version == 6


async def test_prefer_dual_stack_from_a_v4_pool_and_require_refused(client: AsyncClient) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.112.8/30"])
        await s.service("pref", ipFamilyPolicy="PreferDualStack", ipFamilies=["IPv4", "IPv6"])
        assert await s.wait_ingress("pref") == ["198.18.112.8"]
        await s.service("req", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"])
        assert "IPv4 and IPv6" in (await s.wait_reason("req", "NoMatchingPool"))["message"]


async def test_sharing(client: AsyncClient) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.113.0/29"])
        key = {ALLOW_SHARED_IP: "dns"}
        await s.service("dns-udp", ports=[(53, "UDP")], annotations=key)
        shared = await s.wait_ingress("dns-udp")
        await s.service("dns-tcp", ports=[(53, "TCP")], annotations=key)
        assert await s.wait_ingress("dns-tcp") == shared
        allocation = await client.get(IPAllocationResource, shared[0].replace(".", "-"))
        assert {o["name"] for o in allocation.spec["services"]} == {"dns-udp", "dns-tcp"}
        await s.service("clash", ports=[(53, "TCP")], annotations=key)
        assert await s.wait_ingress("clash") != shared  # same key, colliding port: an address of its own
        await s.service("forced", ports=[(53, "UDP")], annotations={**key, LOAD_BALANCER_IPS: shared[0]})
        cond = await s.wait_reason("forced", "SharingConflict")
        assert "53/UDP" in cond["message"] and "dns-udp" in cond["message"]
        await s.service("local", ports=[(8053, "TCP")], externalTrafficPolicy="Local", selector={"app": "x"},
                        annotations={**key, LOAD_BALANCER_IPS: shared[0]})
        assert "externalTrafficPolicy" in (await s.wait_reason("local", "SharingConflict"))["message"]

        # Releasing one sharer keeps the address for the other.
        await client.delete(Service, "dns-udp", namespace=s.ns)
        async def one_owner() -> bool:
            got = await client.get(IPAllocationResource, shared[0].replace(".", "-"))
            return [o["name"] for o in got.spec["services"]] == ["dns-tcp"]
        await wait_until(one_owner, 10, "dns-udp removed from the shared allocation")
        assert await s.ingress("dns-tcp") == shared


async def test_exhaustion_then_growth(client: AsyncClient) -> None:
    async with Scope(client) as s:
        pool = await s.pool(["198.18.114.0/31"])
        for name in ("a", "b"):
            await s.service(name)
            await s.wait_ingress(name)
        await s.service("c")
        cond = await s.wait_reason("c", "PoolExhausted")
        assert pool in cond["message"]
        await client.patch(IPPoolResource, pool, {"spec": {"addresses": ["198.18.114.0/30"]}},
                           patch_type=PatchType.MERGE)
        assert await s.wait_ingress("c") == ["198.18.114.2"]


async def test_the_controller_owns_only_its_own_fields_on_a_service(client: AsyncClient) -> None:
    """Server-side apply with field ownership: another writer's condition (an agent's once, another controller's)
    is neither owned nor rewritten by Portico's controller, so a stale cache cannot erase it."""
    async with Scope(client) as s:
        await s.pool(["198.18.110.32/29"])
        await s.service("web", annotations={LOAD_BALANCER_IPS: "198.18.111.1"})  # not in the pool: refused
        await s.wait_reason("web", "RequestedIPNotInAnyPool")
        other = {"type": "example.com/Ready", "status": "True", "reason": "Fine", "message": "theirs",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
        await client.patch(Service.Status, "web", {"status": {"conditions": [
            *(c.to_dict() for c in (await s.get("web")).status.conditions), other]}}, namespace=s.ns,
            patch_type=PatchType.MERGE, field_manager="someone-else")
        await client.patch(Service, "web", {"metadata": {"annotations": {LOAD_BALANCER_IPS: "198.18.110.33"}}},
                           namespace=s.ns, patch_type=PatchType.MERGE)
        assert await s.wait_ingress("web") == ["198.18.110.33"]
        got = await s.get("web")
        assert "example.com/Ready" in {c.type for c in got.status.conditions}
        entries = [m for m in got.metadata.managedFields if m.manager == "portico-controller"]
        assert [m.operation for m in entries] == ["Apply"], entries
        owned = json.dumps(entries[0].fieldsV1)
        assert "portico.io/AddressAssigned" in owned and "example.com/Ready" not in owned
        assert "portico.io/load-balancer-cleanup" in owned  # its finalizer, and no other
