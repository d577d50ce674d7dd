"""The informer against the real API server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Namespace
from lightkube.types import PatchType

from portico.kube.informer import Informer
from tests.integration.controller_helpers import wait_until


async def test_a_handler_that_raises_does_not_stall_the_informer(client: AsyncClient) -> None:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    await client.create(Namespace(metadata=ObjectMeta(name=ns)))
    seen: list[tuple[str, str]] = []

    def handler(old: Any, new: Any) -> None:
        obj = new or old
        if obj.metadata.name == "bad":
            raise RuntimeError("a bug in a handler")
        seen.append((obj.metadata.name, (obj.data or {}).get("v", "")))

    informer = Informer(client, ConfigMap, handler, namespace=ns)
    task = asyncio.create_task(informer.run())
    try:
        await client.create(ConfigMap(metadata=ObjectMeta(name="bad", namespace=ns), data={"v": "1"}))
        await client.create(ConfigMap(metadata=ObjectMeta(name="good", namespace=ns), data={"v": "1"}))
        await client.patch(ConfigMap, "good", {"data": {"v": "2"}}, namespace=ns, patch_type=PatchType.MERGE)
        await client.patch(ConfigMap, "bad", {"data": {"v": "2"}}, namespace=ns, patch_type=PatchType.MERGE)
        await client.patch(ConfigMap, "good", {"data": {"v": "3"}}, namespace=ns, patch_type=PatchType.MERGE)
        await wait_until(lambda: _has(seen, ("good", "3")), 10, "every event of the good object")
        assert [v for name, v in seen if name == "good"] == ["1", "2", "3"]  # in order, none lost, none twice
        assert informer.handler_errors == 2
        assert informer.cache[f"{ns}/bad"].data == {"v": "2"}  # the cache is right regardless
    finally:
        task.cancel()
        await client.delete(Namespace, ns)


async def _has(seen: list[tuple[str, str]], item: tuple[str, str]) -> bool:
    return item in seen
