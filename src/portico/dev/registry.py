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
    """Copy the built image into the lab registry (skopeo); returns its reference there."""
    reference = image_reference(tag)
    copy = subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:{tag}",
                           f"docker://{reference}"], capture_output=True, text=True, check=False)
    if copy.returncode != 0:
        raise LabError(f"pushing the image to the lab registry failed: {copy.stderr.strip()[:500]}")
    return reference
