"""Installing Portico into the lab with its Helm chart, exactly as a user would into a cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from lightkube import Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet, Deployment

from portico.api.resources import IPPoolResource, L2AdvertisementResource
from portico.controller.annotations import IP_POOL
from portico.dev.addressing import INGRESS_VIPS_V4
from portico.dev.helm import CHART, NAMESPACE, RELEASE, helm, image_values
from portico.dev.shell import LabError

# The lab's Ingress address comes from a pool of its own, which the lab makes (autoAssign off: no other Service
# draws from it), so Ingresses are served as soon as the lab is up and the address never comes from a pool a test
# makes and counts.
INGRESS_POOL = "ingress"


def install_portico(kubeconfig: Path, image: str, deadline: float) -> None:
    """`helm upgrade --install` of the chart running `image` (a second `dev up` finds the release there), then
    wait for the controller and every node's agent."""
    helm(kubeconfig, "upgrade", "--install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--create-namespace",
         *image_values(image), "--set-string", "ingress.service.annotations." + IP_POOL.replace(".", r"\.")
         + f"={INGRESS_POOL}")
    client = Client(config=KubeConfig.from_file(kubeconfig))
    for obj in (IPPoolResource(metadata=ObjectMeta(name=INGRESS_POOL), spec={
                    "addresses": [str(INGRESS_VIPS_V4)], "autoAssign": False}),
                L2AdvertisementResource(metadata=ObjectMeta(name=INGRESS_POOL), spec={"ipPools": [INGRESS_POOL]})):
        client.apply(obj, field_manager="portico-lab")
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
