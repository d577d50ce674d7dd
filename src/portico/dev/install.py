"""Installing Portico into the lab with its Helm chart, exactly as a user would into a cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lightkube import Client, KubeConfig
from lightkube.resources.apps_v1 import DaemonSet, Deployment

from portico.dev.helm import CHART, NAMESPACE, RELEASE, helm, image_values
from portico.dev.shell import LabError


def install_portico(kubeconfig: Path, image: str, deadline: float) -> None:
    """`helm upgrade --install` of the chart running `image` (a second `dev up` finds the release there), then
    wait for the controller and every node's agent."""
    helm(kubeconfig, "upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
         *image_values(image))
    client = Client(config=KubeConfig.from_file(kubeconfig))
    _wait(deadline, "portico-controller available", lambda: _available(client, "portico-controller"))
    _wait(deadline, "portico-agent ready on every node", lambda: _daemonset_ready(client, "portico-agent"))


def _available(client: Client, name: str) -> bool:
    status = client.get(Deployment, name, namespace=NAMESPACE).status
    return bool(status and (status.availableReplicas or 0) >= 1)


def _daemonset_ready(client: Client, name: str) -> bool:
    status = client.get(DaemonSet, name, namespace=NAMESPACE).status
    return bool(status and status.desiredNumberScheduled and status.numberReady == status.desiredNumberScheduled)


def _wait(deadline: float, what: str, check: Callable[[], bool]) -> None:
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise LabError(f"timed out waiting for {what}; see `portico dev logs kubelet` and pod logs")
