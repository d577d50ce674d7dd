"""Building API clients: from a kubeconfig path, or in-cluster (service-account token) as pods do."""

from __future__ import annotations

from pathlib import Path

from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError


def async_client(kubeconfig: Path | None = None, *, field_manager: str) -> AsyncClient:
    """A client from `kubeconfig`, else from $KUBECONFIG / ~/.kube/config, else in-cluster config."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    # HTTP/1.1 on purpose: with http2=True, bench/allocate.py stalled (watch streams sharing one
    # connection with writes); the pool's per-request bookkeeping costs ~16% CPU at 10k Services.
    return AsyncClient(config=config, field_manager=field_manager)


def error_text(e: Exception) -> str:
    """What went wrong with an API call, for a log line: the API server's message, or the transport error."""
    return str(e.status.message) if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"
