"""Helpers for controller tests against the real API server: isolated namespaces, pools, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any, cast

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Namespace, Service

from portico.api.resources import IPAllocationResource, IPPoolResource
from portico.controller.annotations import LOAD_BALANCER_CLASS
from portico.controller.services import CONDITION


class Scope:
    """A namespace of its own and pools that serve only it, so tests cannot disturb each other."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.ns = f"t-{uuid.uuid4().hex[:8]}"
        self.pools: list[str] = []

    async def __aenter__(self) -> Scope:
        await self.client.create(Namespace(metadata=ObjectMeta(name=self.ns, labels={"scope": self.ns})))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for svc in [s async for s in self.client.list(Service, namespace=self.ns)]:
            await self.client.delete(Service, svc.metadata.name, namespace=self.ns)
        try:  # a generous cleanup wait: release speed is a benchmark's business, not a test's
            await wait_until(self._no_services, 60, "services released")
        except AssertionError:
            left = [(svc.metadata.name, svc.metadata.finalizers, svc.metadata.deletionTimestamp)
                    async for svc in self.client.list(Service, namespace=self.ns)]
            raise AssertionError(f"{len(left)} Services not released in 60 s, e.g. {left[:5]}") from None
        for name in self.pools:
            with contextlib.suppress(ApiError):
                await self.client.delete(IPPoolResource, name)
        await self.client.delete(Namespace, self.ns)

    async def _no_services(self) -> bool:
        return not [s async for s in self.client.list(Service, namespace=self.ns)]

    async def pool(self, addresses: list[str], **spec: Any) -> str:
        name = f"{self.ns}-{len(self.pools)}"
        spec.setdefault("namespaceSelector", {"matchLabels": {"scope": self.ns}})
        await self.client.create(IPPoolResource(metadata=ObjectMeta(name=name), spec={"addresses": addresses, **spec}))
        self.pools.append(name)
        return name

    async def service(self, name: str, *, ports: list[tuple[int, str]] | None = None,
                      annotations: dict[str, str] | None = None, **spec: Any) -> Service:
        spec.setdefault("type", "LoadBalancer")
        spec.setdefault("loadBalancerClass", LOAD_BALANCER_CLASS)
        spec["ports"] = [{"name": f"p{port}-{proto.lower()}", "port": port, "protocol": proto}
                         for port, proto in (ports or [(80, "TCP")])]
        meta = {"name": name, "namespace": self.ns, "annotations": annotations or {}}
        obj = cast(Service, Service.from_dict({"metadata": meta, "spec": spec}))
        created: Service = await self.client.create(obj)
        return created

    async def get(self, name: str) -> Service:
        svc: Service = await self.client.get(Service, name, namespace=self.ns)
        return svc

    async def ingress(self, name: str) -> list[str]:
        svc = await self.get(name)
        lb = svc.status.loadBalancer if svc.status else None
        return [i.ip for i in (lb.ingress or [])] if lb else []

    async def condition(self, name: str) -> dict[str, Any] | None:
        svc = await self.get(name)
        conditions = svc.status.conditions if svc.status else None
        found = next((c for c in conditions or [] if c.type == CONDITION), None)
        return found.to_dict() if found is not None else None

    async def events(self, name: str) -> list[tuple[str, str, str]]:
        events = [e async for e in self.client.list(Event, namespace=self.ns,
                                                    fields={"involvedObject.name": name})]
        return [(e.type or "", e.reason or "", e.message or "") for e in events]

    async def wait_event(self, name: str, reason: str, timeout: float = 10) -> tuple[str, str]:
        """(type, message) of the first event with this reason. Events are recorded in the background, after
        the status write they describe, so a test waits for them as it waits for status."""
        async def check() -> tuple[str, str] | None:
            return next(((t, m) for t, r, m in await self.events(name) if r == reason), None)
        found: tuple[str, str] = await wait_until(check, timeout, f"{name} event {reason}")
        return found

    async def wait_ingress(self, name: str, count: int = 1, timeout: float = 15) -> list[str]:
        result: list[str] = await wait_until(lambda: self._ingress_if(name, count), timeout, f"{name} gets an IP")
        return result

    async def _ingress_if(self, name: str, count: int) -> list[str] | None:
        ips = await self.ingress(name)
        return ips if len(ips) == count else None

    async def wait_reason(self, name: str, reason: str, timeout: float = 15) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            cond = await self.condition(name)
            return cond if cond is not None and cond["reason"] == reason else None
        result: dict[str, Any] = await wait_until(check, timeout, f"{name} condition {reason}")
        return result


async def allocations_of(client: AsyncClient, uid: str) -> list[Any]:
    return [a async for a in client.list(IPAllocationResource) if any(s["uid"] == uid for s in a.spec["services"])]


async def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
