"""A pod's volumes on the host, as a kubelet's volume manager makes them (I/O): emptyDir (tmpfs for medium Memory),
configMap, secret, downwardAPI and projected (the ServiceAccount admission plugin's kube-api-access volume: a bound
token, renewed at 80% of its life, the cluster CA and the namespace). hostPath is refused: the lab's nodes share
this machine's filesystem, and a pod must not reach it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.core_v1 import DownwardAPIVolumeFile, KeyToPath, Volume, VolumeMount
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Pod, Secret, ServiceAccountToken

from portico.dev.kubelet.oci import Mount
from portico.dev.shell import run

log = logging.getLogger(__name__)
DEFAULT_MODE = 0o644
TOKEN_RENEW_AT = 0.8  # of a token's lifetime, as the kubelet does
R = TypeVar("R", ConfigMap, Secret)


class VolumeError(Exception):
    """A volume cannot be set up yet (FailedMount): a missing ConfigMap or Secret, a refused kind."""


@dataclass
class PodVolumes:
    """The host directories of a pod's volumes, by volume name, and the token renewals they need."""
    pod: Pod
    client: AsyncClient
    directory: Path
    field_value: Callable[[str], str | None]
    paths: dict[str, Path] = field(default_factory=dict)
    _tokens: list[tuple[Path, str, int | None, list[str]]] = field(default_factory=list)  # dir, file, ttl, aud

    async def set_up(self) -> None:
        spec = self.pod.spec
        assert spec is not None
        for volume in spec.volumes or []:
            if volume.name not in self.paths:
                self.paths[volume.name] = await self._set_up(volume)

    def mounts(self, volume_mounts: list[VolumeMount]) -> list[Mount]:
        mounts = []
        for vm in volume_mounts:
            if vm.name not in self.paths:
                raise VolumeError(f"volumeMount {vm.name!r}: no volume of that name in the pod")
            source = self.paths[vm.name] / (vm.subPath or "")
            mounts.append(Mount(str(source), vm.mountPath, read_only=bool(vm.readOnly)))
        return mounts

    async def renew_tokens(self) -> None:
        """Forever: each projected token rewritten before it expires."""
        while self._tokens:
            lifetimes = [await self._write_token(d, f, ttl, aud) for d, f, ttl, aud in self._tokens]
            await asyncio.sleep(max(60.0, min(lifetimes) * TOKEN_RENEW_AT))

    def tear_down(self) -> None:
        for path in self.paths.values():
            if os.path.ismount(path):
                run(["umount", "-l", str(path)], check=False)

    # -- one volume ---------------------------------------------------------------------------------------
    async def _set_up(self, volume: Volume) -> Path:
        path = self.directory / "volumes" / volume.name
        path.mkdir(parents=True, exist_ok=True)
        if volume.emptyDir is not None:
            path.chmod(0o777)  # as a kubelet makes it: any container user may write
            if volume.emptyDir.medium == "Memory" and not os.path.ismount(path):  # noqa: ASYNC240 -- local
                size = f",size={quantity_bytes(volume.emptyDir.sizeLimit)}" if volume.emptyDir.sizeLimit else ""
                run(["mount", "-t", "tmpfs", "-o", f"mode=1777{size}", "tmpfs", str(path)])
        elif volume.configMap is not None:
            src = volume.configMap
            self._write(path, await self._config_map(src.name or "", src.optional), src.items, src.defaultMode)
        elif volume.secret is not None:
            src2 = volume.secret
            self._write(path, await self._secret(src2.secretName or "", src2.optional), src2.items, src2.defaultMode)
        elif volume.downwardAPI is not None:
            self._write(path, self._downward(volume.downwardAPI.items or []), None, volume.downwardAPI.defaultMode)
        elif volume.projected is not None:
            await self._projected(path, volume)
        else:
            kinds = [k for k, v in volume.to_dict().items() if k != "name" and v is not None]
            raise VolumeError(f"volume {volume.name!r}: the lab kubelet does not mount {', '.join(kinds)} volumes "
                              "(emptyDir, configMap, secret, downwardAPI, projected)")
        return path

    async def _projected(self, path: Path, volume: Volume) -> None:
        assert volume.projected is not None
        mode = volume.projected.defaultMode
        for source in volume.projected.sources or []:
            if source.serviceAccountToken is not None:
                token = source.serviceAccountToken
                entry = (path, token.path, token.expirationSeconds, [token.audience] if token.audience else [])
                self._tokens.append(entry)
                await self._write_token(*entry)
            elif source.configMap is not None:
                data = await self._config_map(source.configMap.name or "", source.configMap.optional)
                self._write(path, data, source.configMap.items, mode)
            elif source.secret is not None:
                data = await self._secret(source.secret.name or "", source.secret.optional)
                self._write(path, data, source.secret.items, mode)
            elif source.downwardAPI is not None:
                self._write(path, self._downward(source.downwardAPI.items or []), None, mode)

    async def _config_map(self, name: str, optional: bool | None) -> dict[str, bytes]:
        cm = await self._get(ConfigMap, "configmap", name, optional)
        if cm is None:
            return {}
        return {**{k: v.encode() for k, v in (cm.data or {}).items()},
                **{k: base64.b64decode(v) for k, v in (cm.binaryData or {}).items()}}

    async def _secret(self, name: str, optional: bool | None) -> dict[str, bytes]:
        secret = await self._get(Secret, "secret", name, optional)
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()} if secret is not None else {}

    async def _get(self, kind: type[R], what: str, name: str, optional: bool | None) -> R | None:
        """The pod's ConfigMap or Secret; None if it is missing and optional (a missing one otherwise waits)."""
        try:
            return await self.client.get(kind, name, namespace=self._namespace)
        except ApiError as e:
            if e.status.code == 404 and optional:
                return None
            raise VolumeError(f'{what} "{name}" not found' if e.status.code == 404 else e.status.message) from e

    def _downward(self, items: list[DownwardAPIVolumeFile]) -> dict[str, bytes]:
        files = {}
        for item in items:
            value = self.field_value(item.fieldRef.fieldPath) if item.fieldRef is not None else None
            if value is None:
                raise VolumeError(f"downwardAPI item {item.path!r}: unsupported field")
            files[item.path] = value.encode()
        return files

    async def _write_token(self, directory: Path, name: str, ttl: int | None, audiences: list[str]) -> float:
        meta = self.pod.metadata
        assert meta is not None and self.pod.spec is not None
        account = self.pod.spec.serviceAccountName or "default"
        bound = BoundObjectReference(apiVersion="v1", kind="Pod", name=meta.name, uid=meta.uid)
        request = ServiceAccountToken(metadata=ObjectMeta(name=account), spec=TokenRequestSpec(
            audiences=audiences, expirationSeconds=ttl or 3600, boundObjectRef=bound))
        try:
            token = await self.client.create(request, account, namespace=self._namespace)
        except ApiError as e:
            raise VolumeError(f"service account token for {account!r}: {e.status.message}") from e
        assert token.status is not None and token.status.token
        _atomic_write(directory / name, token.status.token.encode(), DEFAULT_MODE)
        expires = token.status.expirationTimestamp
        return (expires - dt.datetime.now(dt.UTC)).total_seconds() if expires else float(ttl or 3600)

    @staticmethod
    def _write(directory: Path, data: Mapping[str, bytes], items: list[KeyToPath] | None, mode: int | None) -> None:
        chosen = {i.path: (data[i.key], i.mode) for i in items if i.key in data} if items else \
            {k: (v, None) for k, v in data.items()}
        for relative, (content, item_mode) in chosen.items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, content, item_mode if item_mode is not None else
                          mode if mode is not None else DEFAULT_MODE)

    @property
    def _namespace(self) -> str:
        assert self.pod.metadata is not None
        return self.pod.metadata.namespace or "default"


_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity (1Mi, 64M, 1.5Gi, 1024) in bytes, as tmpfs takes a size."""
    for suffix, factor in _SUFFIXES.items():
        if quantity.endswith(suffix):
            return int(float(quantity[:-len(suffix)]) * factor)
    return int(float(quantity))


def _atomic_write(path: Path, content: bytes, mode: int) -> None:
    """Replace the file in one step: a process reading it (a token being renewed) sees old or new, never half."""
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_bytes(content)
    staged.chmod(mode)
    staged.replace(path)
