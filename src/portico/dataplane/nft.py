"""The `nft` command at the edge: one script in, one atomic transaction applied (or none, and why)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from portico.dataplane.nftables import FAMILY, TABLE, ExistingTable


class NftError(Exception):
    """nft refused a transaction; nothing of it was applied."""


@dataclass
class Counters:
    # set -> element key (its parts, as nft prints them) -> (packets, bytes)
    elements: defaultdict[str, dict[tuple[str, ...], tuple[int, int]]] = field(
        default_factory=lambda: defaultdict(dict))
    named: dict[str, tuple[int, int]] = field(default_factory=dict)


# `nft monitor` names the process that committed each batch, which is how a change of our own is told from drift
# (`portico.dataplane.drift`): by its PID where we share the kernel's view of PIDs (a process on the host), by its
# name in a pod, which has a PID namespace of its own while the monitor reports host PIDs. The image links nft
# under this name; the kernel takes a process's name from the path it was run by.
OWN_NFT = "portico-nft"


def _nft_command() -> str:
    return OWN_NFT if shutil.which(OWN_NFT) else "nft"


@dataclass(frozen=True)
class Nft:
    netns: str | None = None  # a named network namespace to act in (tests, benchmarks); None: our own
    command: str = field(default_factory=_nft_command)
    # The processes of our latest transactions. `ip netns exec` execs nft in place.
    own_pids: deque[int] = field(default_factory=lambda: deque(maxlen=64), compare=False, repr=False)

    def argv(self, *args: str) -> list[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*prefix, self.command, *args]

    async def _run(self, *args: str, script: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args), stdin=asyncio.subprocess.PIPE if script is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self.own_pids.append(proc.pid)
        out, err = await proc.communicate(script.encode() if script is not None else None)
        if proc.returncode != 0:
            raise NftError(err.decode(errors="replace").strip()[:4000])
        return out.decode()

    async def apply(self, script: str) -> None:
        if script:
            await self._run("-f", "-", script=script)

    async def check(self, script: str) -> None:
        """What `apply` would say of this transaction, without committing it (`nft --check`: the kernel sees
        the batch, then aborts it; a few faults, such as a NAT rule in a filter chain, show only at commit)."""
        if script:
            await self._run("--check", "-f", "-", script=script)

    async def existing(self) -> ExistingTable:
        """Our table's chains, objects and base chains' hooks as the kernel has them (when adopting; never on
        the hot path)."""
        try:
            listing = json.loads(await self._run("-j", "list", "table", FAMILY, TABLE))
        except NftError:
            return ExistingTable()  # no table yet
        chains, objects, hooks = [], {}, {}
        for item in listing.get("nftables", []):
            kind, body = next(iter(item.items()))
            if kind == "chain":
                chains.append(body["name"])
                if "hook" in body:
                    hooks[body["name"]] = (body.get("type", ""), body["hook"], int(body.get("prio", 0)))
            elif kind in ("set", "map", "counter"):
                objects[body["name"]] = kind
        return ExistingTable(tuple(chains), objects, hooks)

    def read_counters(self, sets: Iterable[str]) -> Counters:
        """Per-element counters of these sets and every named counter, as (packets, bytes). Blocking: for
        the metrics thread. Missing sets (no table yet) read as empty."""
        out = Counters()
        for name in sets:
            listing = self._run_blocking("-j", "list", "set", FAMILY, TABLE, name)
            for item in listing:
                for elem in item.get("set", {}).get("elem", []):
                    body = elem.get("elem", {}) if isinstance(elem, dict) else {}
                    counter, value = body.get("counter"), body.get("val")
                    if counter is not None and isinstance(value, dict) and "concat" in value:
                        out.elements[name][tuple(str(v) for v in value["concat"])] = (
                            counter["packets"], counter["bytes"])
        for item in self._run_blocking("-j", "list", "counters", "table", FAMILY, TABLE):
            if "counter" in item:
                c = item["counter"]
                out.named[c["name"]] = (c["packets"], c["bytes"])
        return out

    def _run_blocking(self, *args: str) -> list[dict[str, Any]]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return []
        items: list[dict[str, Any]] = json.loads(proc.stdout).get("nftables", [])
        return items

    async def delete_table(self) -> None:
        with contextlib.suppress(NftError):  # not there
            await self._run("delete", "table", FAMILY, TABLE)
