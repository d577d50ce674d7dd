"""The forwarding consumer alone: caches filled by their own handlers (no API server), a real kernel table in a
namespace of its own. What the announcers read from it (policies per VIP) follows what is programmed."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Service
from lightkube.resources.discovery_v1 import EndpointSlice

from portico.agent.caches import SERVICE_NAME_LABEL, AgentCaches
from portico.agent.forwarding import Forwarding
from portico.api.resources import IPAllocationResource
from portico.dataplane.nft import Nft
from portico.kube.events import EventRecorder

NETNS = f"ptfw-{uuid.uuid4().hex[:6]}"
VIP = ipaddress.ip_address("198.19.250.10")


@pytest.fixture
async def forwarding() -> AsyncIterator[tuple[Forwarding, AgentCaches]]:
    await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", NETNS], check=True)
    client = cast(AsyncClient, None)  # never used: nothing here talks to an API server
    caches = AgentCaches(client, "node-x")
    fw = Forwarding("node-x", Nft(netns=NETNS), EventRecorder(client, component="test"))
    try:
        yield fw, caches
    finally:
        await fw.syncer.nft.delete_table()
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", NETNS], check=True)


def _objects(addresses: list[str]) -> tuple[Service, EndpointSlice, Any]:
    svc = Service.from_dict({"metadata": {"name": "web", "namespace": "t", "uid": "u-1"},
                             "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80,
                                                                          "protocol": "TCP"}]}})
    eps = EndpointSlice.from_dict({
        "metadata": {"name": "web-1", "namespace": "t", "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]})
    allocation = IPAllocationResource(metadata=ObjectMeta(name="198-19-250-10"), spec={
        "address": str(VIP), "pool": "p", "services": [{"namespace": "t", "name": "web", "uid": "u-1"}]})
    return cast(Service, svc), cast(EndpointSlice, eps), allocation


def _backends() -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", NETNS, "nft", "-j", "list", "map", "inet", "portico",
                          "backends4_tcp"], capture_output=True, text=True, check=True).stdout
    return sorted(value["concat"][0] for _, value in json.loads(out)["nftables"][1]["map"].get("elem", []))


async def test_the_forwarding_consumer_alone(forwarding: tuple[Forwarding, AgentCaches]) -> None:
    fw, caches = forwarding
    svc, eps, allocation = _objects(["198.19.1.2", "198.19.1.3"])
    caches.services.cache["t/web"] = svc
    caches._on_service(None, svc)
    caches.slices.cache["t/web-1"] = eps
    caches._on_slice(None, eps)
    caches._on_allocation(None, allocation)
    dirty, node_dirty = caches.take_changes()
    assert dirty == {"t/web"} and node_dirty
    result = await fw.sync(caches, dirty, node_dirty, 9471)
    assert result.kind == "full" and fw.data_path_ok
    assert await asyncio.to_thread(_backends) == ["198.19.1.2", "198.19.1.3"]
    assert [len(p.backends) for p in fw.policies_of(VIP)] == [2]  # what the announcers read
    # An endpoint goes: one partial transaction, and the view follows.
    _, smaller, _ = _objects(["198.19.1.3"])
    caches.slices.cache["t/web-1"] = smaller
    caches._on_slice(eps, smaller)
    result = await fw.sync(caches, *caches.take_changes(), 9471)
    assert result.kind == "partial"
    assert await asyncio.to_thread(_backends) == ["198.19.1.3"]
    assert [str(b.ip) for p in fw.policies_of(VIP) for b in p.backends] == ["198.19.1.3"]
