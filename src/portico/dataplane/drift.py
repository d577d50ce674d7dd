"""Noticing when someone else changes our table: `nft flush ruleset`, a firewall reload, an admin's edit.

The agent keeps the desired state in memory and never reads the table back on the hot path, so a
change it did not make would leave VIPs announced and traffic black-holed until the next full sync.
`nft monitor` reports every committed batch with the process that committed it ("# new generation
N by process PID (NAME)"); a batch that touches `inet portico` from a process that is not one of our own
`nft` runs (by PID, or by name in a pod: `portico.dataplane.nft.OWN_NFT`) is drift, and the agent answers it
with a full sync. If the monitor itself stops, what happened meanwhile is unknown: that counts as drift too.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Collection, Iterable

from portico.dataplane.nft import OWN_NFT, Nft
from portico.dataplane.nftables import FAMILY, TABLE

log = logging.getLogger(__name__)

_GENERATION = re.compile(r"^# new generation \d+ by process (\d+)(?: \(([^)]*)\))?")
_OURS = re.compile(rf"\b{FAMILY} {TABLE}(?![-\w])")
RESTART_SECONDS = 1.0


def foreign_change(batch: Iterable[str], pid: int, name: str, own_pids: Collection[int]) -> str | None:
    """The first line of a committed batch that changed our table, if a process other than ours committed it."""
    if pid in own_pids or name == OWN_NFT:
        return None
    return next((line for line in batch if _OURS.search(line)), None)


class TableWatch:
    """Runs `nft monitor` and calls `on_drift(what)` for every change to our table that we did not make."""

    def __init__(self, nft: Nft, on_drift: Callable[[str], None]) -> None:
        self.nft = nft
        self.on_drift = on_drift

    async def run(self) -> None:
        while True:
            try:
                await self._watch()
            except OSError as e:
                log.warning("nft monitor could not run: %s", e)
            self.on_drift("nft monitor stopped; what changed meanwhile is unknown")
            await asyncio.sleep(RESTART_SECONDS)

    async def _watch(self) -> None:
        proc = await asyncio.create_subprocess_exec(*self.nft.argv("monitor"), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None
        batch: list[str] = []
        try:
            while line := (await proc.stdout.readline()).decode(errors="replace"):
                generation = _GENERATION.match(line)
                if generation is None:
                    batch.append(line.rstrip("\n"))
                    continue
                what = foreign_change(batch, int(generation.group(1)), generation.group(2) or "",
                                      self.nft.own_pids)
                batch = []
                if what is not None:
                    self.on_drift(f"{line[2:].strip()}: {what}")
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
