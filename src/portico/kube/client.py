"""Building API clients (from a kubeconfig path, or in-cluster as pods do), and small helpers at the API edge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from httpx_aiohttp.httpx2 import AiohttpTransport
from lightkube import AsyncClient, KubeConfig
from lightkube.config.client_adapter import verify_cluster
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.types import PatchType


def async_client(kubeconfig: Path | None = None, *, field_manager: str) -> AsyncClient:
    """A client from `kubeconfig`, else from $KUBECONFIG / ~/.kube/config, else in-cluster config."""
    config = (KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()).get()
    if config is None or config.user is None:
        raise ConfigError(f"no current context with a user in {kubeconfig or 'the environment'}")
    # aiohttp moves the bytes under lightkube/httpx: httpcore's pool polls every idle connection on each
    # request, and a write cost 860 us of CPU through it against 455 us through aiohttp (a create of an Event,
    # 16 at a time, on this machine). HTTP/1.1 either way: with http2=True, bench/allocate.py stalled (watch
    # streams sharing one connection with writes).
    transport = AiohttpTransport(verify=verify_cluster(config.cluster, config.user, config.abs_file))
    return AsyncClient(config=config, field_manager=field_manager, transport=transport)


def error_text(e: Exception) -> str:
    """What went wrong with an API call, for a log line: the API server's message, or the transport error."""
    return str(e.status.message) if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"


async def apply_status(client: AsyncClient, resource: Any, name: str, status: dict[str, Any], *,
                       field_manager: str, namespace: str | None = None) -> None:
    """Server-side apply `status` of an object as `field_manager`: what this manager applied before and
    leaves out now is removed (how each agent keeps only its own entry of a per-node list map)."""
    metadata = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    body = {"apiVersion": resource._api_info.resource.api_version, "kind": resource._api_info.resource.kind,
            "metadata": metadata, "status": status}
    await client.patch(resource.Status, name, body, namespace=namespace, patch_type=PatchType.APPLY,
                       field_manager=field_manager, force=True)
