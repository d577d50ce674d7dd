"""The `nft` command at the edge: one script in, one atomic transaction applied (or none, and why)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

from portico.dataplane.nftables import FAMILY, TABLE


class NftError(Exception):
    """nft refused a transaction; nothing of it was applied."""


@dataclass(frozen=True)
class Nft:
    netns: str | None = None  # a named network namespace to act in (tests, benchmarks); None: our own

    def _argv(self, *args: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, "nft", *args]

    async def _run(self, *args: str, script: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(*args), stdin=asyncio.subprocess.PIPE if script is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(script.encode() if script is not None else None)
        if proc.returncode != 0:
            raise NftError(err.decode(errors="replace").strip()[:4000])
        return out.decode()

    async def apply(self, script: str) -> None:
        if script:
            await self._run("-f", "-", script=script)

    async def existing(self) -> tuple[list[str], list[str]]:
        """Chains, and sets and maps, of our table as the kernel has them (when adopting; never on the hot
        path)."""
        try:
            listing = json.loads(await self._run("-j", "list", "table", FAMILY, TABLE))
        except NftError:
            return [], []  # no table yet
        chains, sets = [], []
        for item in listing.get("nftables", []):
            kind, body = next(iter(item.items()))
            if kind == "chain":
                chains.append(body["name"])
            elif kind in ("set", "map"):
                sets.append(body["name"])
        return chains, sets

    async def delete_table(self) -> None:
        with contextlib.suppress(NftError):  # not there
            await self._run("delete", "table", FAMILY, TABLE)
