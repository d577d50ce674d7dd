"""A real control plane (etcd, kube-apiserver, kube-controller-manager) for the integration tier.

It listens on 127.0.0.1 with free ports, apart from any lab, and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from portico.dev.controlplane import ControlPlane, ControlPlaneConfig
from portico.kube.client import async_client
from portico.kube.crds import ensure_crd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneConfig]:
    config = ControlPlaneConfig(
        state_dir=Path(tmp_path_factory.mktemp("controlplane")),
        api_address=ipaddress.IPv4Address("127.0.0.1"), api_port=_free_port(),
        etcd_client_port=_free_port(), etcd_peer_port=_free_port(), controller_manager_port=_free_port(),
    )
    cp = ControlPlane(config)
    try:
        cp.start()
        yield config
    finally:
        cp.stop()
    assert not any(cp.running().values()), "control plane processes left running"


@pytest.fixture
async def client(controlplane: ControlPlaneConfig) -> AsyncIterator[AsyncClient]:
    c = async_client(controlplane.admin_kubeconfig, field_manager="portico-tests")
    yield c
    await c.close()


@pytest.fixture(scope="session")
async def portico_crds(controlplane: ControlPlaneConfig) -> None:
    import yaml

    from portico.api.crds import CRD_DIR

    client = async_client(controlplane.admin_kubeconfig, field_manager="portico-tests")
    for path in sorted(CRD_DIR.glob("*.yaml")):
        await ensure_crd(client, yaml.safe_load(path.read_text()))
    await client.close()


@pytest.fixture(scope="module")
async def controller(controlplane: ControlPlaneConfig, portico_crds: None) -> AsyncIterator[Any]:
    """The real controller, in this process, against the real API server (not the default class).
    Per module: tests elsewhere that write IPAllocations by hand must not see it clean them up."""
    from portico.controller.manager import Controller

    client = async_client(controlplane.admin_kubeconfig, field_manager="portico-controller")
    ctl = Controller(client, default_class=False, workers=4)
    task = asyncio.create_task(ctl.run())
    yield ctl
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()
