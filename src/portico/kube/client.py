"""Building API clients: from a kubeconfig path, or in-cluster (service-account token) as pods do."""

from __future__ import annotations

from pathlib import Path

from lightkube import AsyncClient, KubeConfig


def async_client(kubeconfig: Path | None = None, *, field_manager: str) -> AsyncClient:
    """A client from `kubeconfig`, else from $KUBECONFIG / ~/.kube/config, else in-cluster config."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    return AsyncClient(config=config, field_manager=field_manager)
