"""The lab's image registry: the CNCF distribution registry (Debian's `docker-registry`) on the machine's
loopback, holding the image `make image` built (pushed with skopeo) — where the lab's nodes pull from, as a
cluster's nodes pull from a registry. It listens on 127.0.0.1 only: nothing outside this machine reaches it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx2 as httpx

from portico.dev import gateway_api
from portico.dev.shell import LabError

REGISTRY = "registry"  # the daemon's name
ADDRESS = "127.0.0.1:5055"  # not 5000: where the Debian package's own service listens, on a machine with systemd
REPOSITORY = "portico"
IMAGE_LAYOUT = Path(__file__).parents[3] / ".cache" / "image" / "oci"  # where hack/image.sh leaves the image
CONFIG = "registry.yml"
_REF_NAME = "org.opencontainers.image.ref.name"


def config(storage: Path) -> str:
    """The registry's configuration: plain HTTP on loopback, its blobs in the lab's state directory."""
    return json.dumps({
        "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": ADDRESS},
    })  # JSON is YAML


def registry_argv(config_path: Path) -> list[str]:
    return ["docker-registry", "serve", str(config_path)]


def wait_ready(deadline: float, log: Path) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{ADDRESS}/v2/", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise LabError(f"the lab registry did not answer on {ADDRESS}; see {log}")


def built_tag(layout: Path = IMAGE_LAYOUT) -> str | None:
    """The tag of the image `make image` left in the layout, if any."""
    try:
        manifests = json.loads((layout / "index.json").read_text())["manifests"]
    except (OSError, ValueError, KeyError):
        return None
    tags = [m.get("annotations", {}).get(_REF_NAME) for m in manifests]
    return next((t for t in tags if t), None)


def image_reference(tag: str) -> str:
    return f"{ADDRESS}/{REPOSITORY}:{tag}"


def push(tag: str, layout: Path = IMAGE_LAYOUT) -> str:
    """Copy the built image into the lab registry; returns its reference there."""
    return copy_image(f"oci:{layout}:{tag}", image_reference(tag))


def copy_image(source: str, reference: str) -> str:
    """Copy an image (a skopeo source, e.g. oci:LAYOUT:TAG) into the lab registry as `reference`."""
    copy = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", source, f"docker://{reference}"],
                          capture_output=True, text=True, check=False)
    if copy.returncode != 0:
        raise LabError(f"pushing {reference} to the lab registry failed: {copy.stderr.strip()[:500]}")
    return reference


# The lab registry mirrors registry.k8s.io, as a node's container runtime is pointed at a mirror (containerd's
# hosts.toml): upstream manifests keep their image names, and the lab serves those images built from their pinned
# source (mirror_gateway_api) — nothing is pulled from outside the lab.
MIRRORED_REGISTRY = "registry.k8s.io"


def mirrored(reference: str) -> str:
    """Where the lab pulls `reference` from: registry.k8s.io/NAME from the lab registry's NAME, others unchanged."""
    registry, _, name = reference.partition("/")
    return f"{ADDRESS}/{name}" if registry == MIRRORED_REGISTRY and name else reference


def mirror_gateway_api() -> list[str]:
    """Push echo-basic, built from the pinned Gateway API module, under every tag the conformance manifests name."""
    layout = gateway_api.build() / "oci"
    return [copy_image(f"oci:{layout}:{gateway_api.ECHO_BASIC_LAYOUT_TAG}",
                       mirrored(f"{MIRRORED_REGISTRY}/{gateway_api.ECHO_BASIC_REPOSITORY}:{tag}"))
            for tag in gateway_api.echo_basic_tags()]
