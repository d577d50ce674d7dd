"""Building API clients (from a kubeconfig path, or in-cluster as pods do), and small helpers at the API edge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.types import PatchType


def async_client(kubeconfig: Path | None = None, *, field_manager: str) -> AsyncClient:
    """A client from `kubeconfig`, else from $KUBECONFIG / ~/.kube/config, else in-cluster config."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    # HTTP/1.1 on purpose: with http2=True, bench/allocate.py stalled (watch streams sharing one
    # connection with writes); the pool's per-request bookkeeping costs ~16% CPU at 10k Services.
    return AsyncClient(config=config, field_manager=field_manager)


def error_text(e: Exception) -> str:
    """What went wrong with an API call, for a log line: the API server's message, or the transport error."""
    return str(e.status.message) if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"


async def apply_status(client: AsyncClient, resource: Any, name: str, status: dict[str, Any], *,
                       field_manager: str) -> None:
    """Server-side apply `status` of a cluster-scoped object as `field_manager`: what this manager applied
    before and leaves out now is removed (how each agent keeps only its own entry of a per-node list map)."""
    body = {"apiVersion": resource._api_info.resource.api_version, "kind": resource._api_info.resource.kind,
            "metadata": {"name": name}, "status": status}
    await client.patch(resource.Status, name, body, patch_type=PatchType.APPLY, field_manager=field_manager,
                       force=True)
