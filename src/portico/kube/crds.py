"""Installing CustomResourceDefinitions and waiting until the API server serves them."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition


async def ensure_crd(client: AsyncClient, manifest: dict[str, Any]) -> None:
    """Create the CRD (if absent) and wait until the API server serves it."""
    crd = cast(CustomResourceDefinition, CustomResourceDefinition.from_dict(manifest))
    try:
        await client.create(crd)
    except ApiError as e:
        if e.status.code != 409:
            raise
    for _ in range(100):
        got = await client.get(CustomResourceDefinition, manifest["metadata"]["name"])
        conditions = got.status.conditions if got.status else None
        if any(c.type == "Established" and c.status == "True" for c in conditions or []):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"CRD {manifest['metadata']['name']} not established")
