"""`portico dev whoami`: run inside a lab pod, proves in-cluster config works as in a real cluster."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.authentication_v1 import SelfSubjectReview

ENV_SHOWN = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "HOSTNAME")


async def _review() -> dict[str, Any]:
    client = AsyncClient(config=KubeConfig.from_service_account())
    review = await client.create(SelfSubjectReview(metadata=ObjectMeta()))
    info = review.status.userInfo if review.status else None
    return {"username": info.username if info else None, "groups": info.groups if info else []}


def whoami() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k in ENV_SHOWN or k.startswith("POD_") or k.startswith("NODE_")}
    return {"user": asyncio.run(_review()), "env": env}
