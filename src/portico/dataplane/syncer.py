"""Keeping the kernel's `portico` table equal to the desired state, kube-proxy style.

Every change is one atomic transaction with only what changed. The first sync, and any sync after
a failed transaction, is a full one: it adopts whatever table a previous agent left (established
flows live in conntrack and never notice), refills it and deletes chains nobody wants.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from portico.dataplane.nft import Nft, NftError
from portico.dataplane.nftables import KernelState, Ruleset, full_transaction, incremental_transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncResult:
    kind: str  # "full" | "partial" | "none"
    seconds: float
    fallback: bool = False  # a partial sync failed and a full one repaired it


class Syncer:
    def __init__(self, nft: Nft) -> None:
        self.nft = nft
        self.kernel = KernelState()
        self._needs_full = True

    async def sync(self, replacements: Mapping[object, Ruleset | None]) -> SyncResult:
        """Replace these fragments (a frontend's or the node's; None removes one) and program the kernel."""
        start = time.monotonic()
        delta = self.kernel.apply(replacements)
        if self._needs_full:
            await self._full()
            return SyncResult("full", time.monotonic() - start)
        if not delta:
            return SyncResult("none", time.monotonic() - start)
        try:
            await self.nft.apply(incremental_transaction(delta))
            return SyncResult("partial", time.monotonic() - start)
        except NftError as e:
            log.error("partial sync refused, falling back to a full sync: %s", e)
            self._needs_full = True
            await self._full()
            return SyncResult("full", time.monotonic() - start, fallback=True)

    async def _full(self) -> None:
        chains, objects = await self.nft.existing()
        await self.nft.apply(full_transaction(self.kernel.ruleset(), chains, objects))
        self._needs_full = False
