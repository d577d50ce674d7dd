"""The image `make image` builds (hack/image.sh): its OCI metadata and size, and `portico --version` (and the tools
the agent drives) run from its unpacked root filesystem by a real OCI runtime (runc: docs/image.md says why not
crun here)."""

from __future__ import annotations

import json
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

LAYOUT = Path(__file__).parents[2] / ".cache" / "image" / "oci"
REF_NAME = "org.opencontainers.image.ref.name"


def blob(digest: str) -> dict[str, Any]:
    algorithm, value = digest.split(":", 1)
    return dict(json.loads((LAYOUT / "blobs" / algorithm / value).read_text()))


@pytest.fixture(scope="module")
def image() -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(tag, manifest, config) of the image in the layout."""
    if not (LAYOUT / "index.json").exists():
        pytest.fail(f"no image at {LAYOUT}: `make image` builds it (make test does)")
    [entry] = json.loads((LAYOUT / "index.json").read_text())["manifests"]
    manifest = blob(entry["digest"])
    return entry["annotations"][REF_NAME], manifest, blob(manifest["config"]["digest"])


def test_the_image_is_tagged_and_labelled_from_the_package_and_the_commit(
        image: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
    tag, manifest, config = image
    version = metadata.version("portico")
    labels = config["config"]["Labels"]
    revision = labels["org.opencontainers.image.revision"]
    assert tag == f"{version}-{revision}" and labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert config["config"]["User"] == "65532:65532"  # the controller runs unprivileged; the agent says otherwise
    size = sum(layer["size"] for layer in manifest["layers"])
    print(f"image {tag}: {len(manifest['layers'])} layer(s), {size / 1e6:.1f} MB compressed")
    assert size < 200e6


def run_in_image(tag: str, bundle: Path, *argv: str) -> str:
    """The stdout of a command run from the image's unpacked root filesystem by runc (as a kubelet's runtime
    would run the container: its own mount, PID, IPC and UTS namespaces, the image's user)."""
    if not bundle.exists():
        subprocess.run(["umoci", "unpack", "--image", f"{LAYOUT}:{tag}", str(bundle)], check=True,
                       capture_output=True)
    spec_path = bundle / "config.json"
    spec = json.loads(spec_path.read_text())
    spec["process"]["args"], spec["process"]["terminal"] = list(argv), False
    spec_path.write_text(json.dumps(spec))
    state = bundle.parent / "runc"
    name = f"portico-test-{uuid.uuid4().hex[:8]}"
    run = subprocess.run(["runc", "--root", str(state), "run", "--bundle", str(bundle), name], capture_output=True,
                         text=True, timeout=60, check=False)
    subprocess.run(["runc", "--root", str(state), "delete", "--force", name], capture_output=True, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_the_image_runs_portico_and_the_tools_the_agent_drives(image: tuple[str, dict[str, Any], dict[str, Any]],
                                                              tmp_path: Path) -> None:
    tag, bundle = image[0], tmp_path / "bundle"
    assert run_in_image(tag, bundle, "/usr/local/bin/portico", "--version").strip() == \
        f"portico {metadata.version('portico')}"
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["user"]["uid"] == 65532  # the image's user, not root
    assert run_in_image(tag, bundle, "id", "-u").strip() == "65532"
    for tool, answer in (("nft", "nftables v1.0"), ("conntrack", "conntrack v1."), ("gobgpd", "gobgpd version"),
                         ("haproxy", "HAProxy version 2.6"), ("ip", "ip utility, iproute2")):
        flag = {"haproxy": "-v", "ip": "-V"}.get(tool, "--version")
        assert answer in run_in_image(tag, bundle, tool, flag), tool
