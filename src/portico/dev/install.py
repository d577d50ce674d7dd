"""Installing Portico into the lab from deploy/, exactly as a user would into a cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightkube import Client, KubeConfig, codecs
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import DaemonSet, Deployment

from portico.dev.controlplane import REPO_ROOT
from portico.dev.shell import LabError

DEPLOY_DIR = REPO_ROOT / "deploy"
MANIFEST_IMAGE = "portico"  # deploy/'s image: the lab replaces it with its registry's reference
FIELD_MANAGER = "portico-dev"


def manifests() -> list[Path]:
    """CRDs first (what follows may use them), then the components."""
    return [*sorted((DEPLOY_DIR / "crds").glob("*.yaml")), DEPLOY_DIR / "controller.yaml", DEPLOY_DIR / "agent.yaml"]


def with_image(obj: Any, image: str) -> Any:
    """The object with Portico's containers running `image` (what the chart's image values will set)."""
    template = getattr(getattr(obj, "spec", None), "template", None)
    for container in (template.spec.containers if template is not None and template.spec else []):
        if container.image == MANIFEST_IMAGE:
            container.image = image
    return obj


def install_portico(kubeconfig: Path, image: str, deadline: float) -> None:
    client = Client(config=KubeConfig.from_file(kubeconfig), field_manager=FIELD_MANAGER)
    for path in manifests():
        for obj in codecs.load_all_yaml(path.read_text()):
            client.apply(with_image(obj, image), force=True)
            if isinstance(obj, CustomResourceDefinition):
                _wait(deadline, f"CRD {obj.metadata.name} established",
                      lambda name=obj.metadata.name: _established(client, name))
    _wait(deadline, "portico-controller available", lambda: _available(client, "portico-controller"))
    _wait(deadline, "portico-agent ready on every node", lambda: _daemonset_ready(client, "portico-agent"))


def _established(client: Client, name: str) -> bool:
    status = client.get(CustomResourceDefinition, name).status
    return any(c.type == "Established" and c.status == "True" for c in (status.conditions or [])) if status else False


def _available(client: Client, name: str) -> bool:
    status = client.get(Deployment, name, namespace="portico-system").status
    return bool(status and (status.availableReplicas or 0) >= 1)


def _daemonset_ready(client: Client, name: str) -> bool:
    status = client.get(DaemonSet, name, namespace="portico-system").status
    return bool(status and status.desiredNumberScheduled and status.numberReady == status.desiredNumberScheduled)


def _wait(deadline: float, what: str, check: Callable[[], bool]) -> None:
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise LabError(f"timed out waiting for {what}; see `portico dev logs kubelet` and pod logs")
