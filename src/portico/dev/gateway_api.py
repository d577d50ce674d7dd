"""The upstream Gateway API release Portico is built and tested against (hack/gateway-api/build.sh, pinned and
cached): its conformance suite, the echo-basic backend the suite's manifests run, and the standard channel's CRDs,
which the chart vendors (`portico gen crds` copies them; a test keeps the copies equal to the module's)."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

from portico.dev.controlplane import REPO_ROOT
from portico.dev.shell import build_output

BUILD_SCRIPT = REPO_ROOT / "hack" / "gateway-api" / "build.sh"
VENDORED_CRDS = REPO_ROOT / "charts" / "portico" / "crds" / "gateway-api"  # Helm installs crds/ recursively
ECHO_BASIC_REPOSITORY = "gateway-api/echo-basic"  # under registry.k8s.io, as upstream publishes it
ECHO_BASIC_LAYOUT_TAG = "echo-basic"  # the image's tag in the build's OCI layout


@functools.cache
def version() -> str:
    """The pinned release, as hack/gateway-api/go.mod requires it (its one home)."""
    for line in (BUILD_SCRIPT.parent / "go.mod").read_text().splitlines():
        words = line.split()
        if words[:1] == ["sigs.k8s.io/gateway-api/conformance"]:
            return words[1]
    raise LookupError("hack/gateway-api/go.mod does not require sigs.k8s.io/gateway-api/conformance")


@functools.cache
def build() -> Path:
    """The build's directory: conformance.test, echo-basic, oci/ (echo-basic as an image), crds/, echo-basic-tags."""
    return build_output(BUILD_SCRIPT, "the Gateway API conformance suite")


def echo_basic_tags() -> list[str]:
    """The echo-basic tags the suite's manifests name (build.sh reads them out of the module)."""
    return (build() / "echo-basic-tags").read_text().split()


def upstream_crds() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((build() / "crds").glob("*.yaml"))}


def vendor_crds() -> list[Path]:
    """Copy the module's CRDs into the chart, replacing what was there."""
    shutil.rmtree(VENDORED_CRDS, ignore_errors=True)
    VENDORED_CRDS.mkdir(parents=True)
    for name, text in upstream_crds().items():
        (VENDORED_CRDS / name).write_text(text)
    return sorted(VENDORED_CRDS.iterdir())
