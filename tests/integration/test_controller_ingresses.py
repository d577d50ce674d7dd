"""The controller against the real API server: every Ingress of Portico's IngressClass gets the shared Ingress
address (the `portico-ingress` Service's) in status.loadBalancer and an Event naming what it cannot serve; an
Ingress of another class is left alone."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Service
from lightkube.resources.networking_v1 import Ingress, IngressClass

from portico.api.resources import IPPoolResource
from portico.controller.annotations import IP_POOL, LOAD_BALANCER_CLASS
from portico.l7.ingress import INGRESS_CONTROLLER, INGRESS_SERVICE
from tests.integration.controller_helpers import Scope, wait_until

pytestmark = pytest.mark.usefixtures("controller")
HOME = "portico-system"  # the controller's namespace in the fixture (its default)


@pytest.fixture
async def address(client: AsyncClient) -> AsyncIterator[str]:
    """The Ingress address Service, given an address from a pool of its own; yields the class's name."""
    pool, cls = f"ingress-{uuid.uuid4().hex[:6]}", f"portico-{uuid.uuid4().hex[:6]}"
    with contextlib.suppress(ApiError):
        await client.create(Namespace(metadata=ObjectMeta(name=HOME)))
    await client.create(IPPoolResource(metadata=ObjectMeta(name=pool), spec={
        "addresses": ["198.18.119.8/29"], "autoAssign": False}))
    await client.create(cast(Service, Service.from_dict({
        "metadata": {"name": INGRESS_SERVICE, "namespace": HOME, "annotations": {IP_POOL: pool}},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": LOAD_BALANCER_CLASS,
                 "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}})))
    await client.create(cast(IngressClass, IngressClass.from_dict({"metadata": {"name": cls},
                                                                   "spec": {"controller": INGRESS_CONTROLLER}})))
    try:
        yield cls
    finally:
        await client.delete(IngressClass, cls)
        await client.delete(Service, INGRESS_SERVICE, namespace=HOME)
        await wait_until(lambda: _gone(client), 15, "the Ingress Service released")
        await client.delete(IPPoolResource, pool)


async def _gone(client: AsyncClient) -> bool:
    try:
        await client.get(Service, INGRESS_SERVICE, namespace=HOME)
    except ApiError as e:
        return e.status.code == 404
    return False


def ingress(ns: str, name: str, cls: str, service: str) -> Ingress:
    return cast(Ingress, Ingress.from_dict({"metadata": {"name": name, "namespace": ns}, "spec": {
        "ingressClassName": cls, "rules": [{"host": f"{name}.example", "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": service, "port": {"number": 80}}}}]}}]}}))


async def load_balancer(client: AsyncClient, ns: str, name: str) -> list[Any]:
    obj = await client.get(Ingress, name, namespace=ns)
    lb = obj.status.loadBalancer if obj.status else None
    return [i.ip for i in (lb.ingress or [])] if lb else []


async def test_ingresses_of_our_class_get_the_shared_address_and_what_they_lack_is_told(
        client: AsyncClient, address: str) -> None:
    async with Scope(client) as s:
        await s.service("web", type="ClusterIP", loadBalancerClass=None)
        await client.create(ingress(s.ns, "ok", address, "web"))
        await client.create(ingress(s.ns, "broken", address, "nobody"))
        await client.create(ingress(s.ns, "theirs", "someone-else", "web"))
        [ip] = await wait_until(lambda: load_balancer(client, s.ns, "ok"), 15, "ok's status")
        assert ip.startswith("198.18.119.")
        assert await wait_until(lambda: load_balancer(client, s.ns, "broken"), 15, "broken's status") == [ip]
        kind, message = await s.wait_event("broken", "NotServedAsWritten")
        assert kind == "Warning"
        assert message == (f"spec.rules[0].http.paths[0].backend: Service {s.ns}/nobody does not exist; its "
                           "requests are answered 500")
        assert not [e for e in await s.events("ok") if e[1] == "NotServedAsWritten"]
        assert await load_balancer(client, s.ns, "theirs") == []
        for name in ("ok", "broken", "theirs"):
            await client.delete(Ingress, name, namespace=s.ns)
