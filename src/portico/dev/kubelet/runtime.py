"""The lab's container runtime (I/O): images pulled from the lab registry with skopeo and unpacked once each with
umoci; each container a fresh overlay over its image's root filesystem, run by runc in its pod's network namespace.

runc rather than crun: crun 1.8.1 (Debian bookworm) refuses hosts with hybrid cgroups, as this one is
(docs/image.md). Only the lab registry is pulled from: nothing the lab starts reaches outside the machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portico.dev.kubelet.images import BUILTIN_IMAGES, image_name
from portico.dev.registry import ADDRESS as REGISTRY
from portico.dev.registry import MIRRORED_REGISTRY, mirrored
from portico.dev.shell import run

log = logging.getLogger(__name__)
_REF_NAME = "org.opencontainers.image.ref.name"


class PullError(Exception):
    """The image cannot be pulled (ErrImagePull); the message is what `kubectl describe` shows."""


@dataclass(frozen=True)
class Image:
    reference: str
    digest: str  # the manifest's
    rootfs: Path  # unpacked, shared read-only by every container of the image
    config: dict[str, Any]  # the image's config (Entrypoint, Cmd, Env, User, ...)

    @property
    def image_id(self) -> str:
        """What a container status reports: the repository and the digest pulled."""
        return f"{image_name(self.reference)}@{self.digest}"

    def read(self, path: str) -> str:
        """A text file of the image (its /etc/passwd, ...), or "" (paths resolve inside the image's root)."""
        try:
            return (self.rootfs / path.lstrip("/")).read_text()
        except OSError:
            return ""


def _registry_of(reference: str) -> str:
    first = reference.split("/", 1)[0]
    return first if "/" in reference and ("." in first or ":" in first or first == "localhost") else "docker.io"


class ImageStore:
    """Pulled images (an OCI layout) and their unpacked root filesystems, in the kubelet's state directory."""

    def __init__(self, directory: Path) -> None:
        self.layout = directory / "layout"
        self.unpacked = directory / "unpacked"
        self._lock = asyncio.Lock()  # one skopeo/umoci at a time: they share the layout's index

    async def pull(self, reference: str, policy: str) -> Image:
        source = mirrored(reference)
        if _registry_of(source) != REGISTRY:
            raise PullError(f'the lab pulls only from its registry {REGISTRY} (nothing leaves the lab; it mirrors '
                            f'{MIRRORED_REGISTRY}), not {_registry_of(reference)}: push the image there (skopeo '
                            f'copy), or use a lab image ({", ".join(BUILTIN_IMAGES)})')
        name = re.sub(r"[^A-Za-z0-9._-]", "_", reference)
        self.layout.mkdir(parents=True, exist_ok=True)
        async with self._lock:
            digest = self._digest(name)
            if digest is None or policy == "Always":
                if policy == "Never":
                    raise PullError(f'container image "{reference}" is not present with pull policy of Never')
                await self._run("skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{source}",
                                f"oci:{self.layout}:{name}")
                digest = self._digest(name)
                assert digest is not None
            bundle = self.unpacked / digest.replace(":", "_")
            if not (bundle / "rootfs").is_dir():
                shutil.rmtree(bundle, ignore_errors=True)
                await self._run("umoci", "unpack", "--image", f"{self.layout}:{name}", str(bundle))
        manifest = self._blob(digest)
        return Image(reference, digest, bundle / "rootfs", self._blob(manifest["config"]["digest"]))

    def _digest(self, name: str) -> str | None:
        try:
            index = json.loads((self.layout / "index.json").read_text())
        except OSError:
            return None
        return next((m["digest"] for m in index.get("manifests", [])
                     if m.get("annotations", {}).get(_REF_NAME) == name), None)

    def _blob(self, digest: str) -> dict[str, Any]:
        algorithm, value = digest.split(":", 1)
        return dict(json.loads((self.layout / "blobs" / algorithm / value).read_text()))

    async def _run(self, *argv: str) -> None:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            lines = out.decode(errors="replace").strip().splitlines() or [f"{argv[0]} failed ({proc.returncode})"]
            found = re.search(r'msg="(.*)"', lines[-1])  # skopeo's log line: the message alone
            raise PullError((found.group(1).replace('\\"', '"') if found else lines[-1])[:400])


class Runc:
    """Containers run by runc, its state under `root`. A container's bundle is its directory: config.json and
    `rootfs`, an overlay of the image's root filesystem with a writable layer of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self, bundle: Path, image: Image, spec: dict[str, Any]) -> None:
        """A fresh writable layer (a restarted container starts from its image again) and config.json."""
        self.unmount(bundle)
        shutil.rmtree(bundle, ignore_errors=True)
        for part in ("rootfs", "upper", "work"):
            (bundle / part).mkdir(parents=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={image.rootfs},upperdir={bundle / 'upper'},workdir={bundle / 'work'}", str(bundle / "rootfs")])
        (bundle / "config.json").write_text(json.dumps(spec))

    async def start(self, container_id: str, bundle: Path, log_file: int) -> asyncio.subprocess.Process:
        """`runc run` in the foreground: it exits with the container's process, signals it receives passed on."""
        await self.delete(container_id)  # the state of a previous run, if runc was killed
        return await asyncio.create_subprocess_exec(
            "runc", "--root", str(self.root), "run", "--bundle", str(bundle), container_id,
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)

    async def kill(self, container_id: str, sig: signal.Signals) -> None:
        proc = await asyncio.create_subprocess_exec("runc", "--root", str(self.root), "kill", container_id,
                                                    sig.name, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()

    async def delete(self, container_id: str) -> None:
        proc = await asyncio.create_subprocess_exec("runc", "--root", str(self.root), "delete", "--force",
                                                    container_id, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()

    def exec_argv(self, container_id: str) -> list[str]:
        """What runs a command inside the running container (exec probes, preStop hooks)."""
        return ["runc", "--root", str(self.root), "exec", container_id]

    @staticmethod
    def unmount(bundle: Path) -> None:
        rootfs = bundle / "rootfs"
        if os.path.ismount(rootfs):
            run(["umount", "-l", str(rootfs)], check=False)


def delete_all(root: Path) -> None:
    """Every container runc still knows under `root` (the lab going down), and its cgroups."""
    listing = run(["runc", "--root", str(root), "list", "--format", "json"], check=False)
    for entry in json.loads(listing or "null") or []:
        run(["runc", "--root", str(root), "delete", "--force", entry["id"]], check=False)


def unmount_under(directory: Path) -> None:
    """Every mount below `directory` (overlays, tmpfs volumes), deepest first, so nothing is removed through one."""
    prefix = str(directory.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1].replace("\\040", " ") for line in mounts]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        run(["umount", "-l", point], check=False)
