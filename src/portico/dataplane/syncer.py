"""Keeping the kernel's `portico` table equal to the desired state, kube-proxy style.

Every change is one atomic transaction with only what changed. The first sync, and any sync after
a failed transaction, is a full one: it adopts whatever table a previous agent left (established
flows live in conntrack and never notice), refills it and deletes chains nobody wants.

One fragment the kernel refuses must not take the others down with it (a transaction is all or
nothing): when a full sync is refused, the fragments are searched in halves with `nft --check`
(nothing changes meanwhile, traffic flows on the table as it is), and the table is laid without the
ones refused. Some faults only show when a transaction commits; then the table is laid with what
was accepted before (fragments unchanged since the last commit) and the changed ones are added in
halves, each try a real transaction that the kernel takes whole or not at all. A refused fragment
is left out until it is replaced, and is reported in `SyncResult.refused`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from portico.dataplane.nft import Nft, NftError
from portico.dataplane.nftables import (
    NODE,
    ExistingTable,
    KernelState,
    Ruleset,
    full_transaction,
    incremental_transaction,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncResult:
    kind: str  # "full" | "partial" | "none"
    seconds: float
    fallback: bool = False  # a partial sync failed and a full one repaired it
    refused: Mapping[object, str] = field(default_factory=dict)  # fragment key -> the kernel's error; left out


class Syncer:
    def __init__(self, nft: Nft) -> None:
        self.nft = nft
        self.kernel = KernelState()
        self._needs_full = True
        self._changed: set[object] = set()  # fragments replaced since the last committed transaction

    def resync(self) -> None:
        """The kernel's table may no longer be what we wrote (drift): the next sync is a full one."""
        self._needs_full = True

    async def sync(self, replacements: Mapping[object, Ruleset | None]) -> SyncResult:
        """Replace these fragments (a frontend's or the node's; None removes one) and program the kernel."""
        start = time.monotonic()
        delta = self.kernel.apply(replacements)
        self._changed |= replacements.keys()
        if self._needs_full:
            refused = await self._full()
            return SyncResult("full", time.monotonic() - start, refused=refused)
        if not delta:
            return SyncResult("none", time.monotonic() - start)
        try:
            await self.nft.apply(incremental_transaction(delta))
            self._changed.clear()
            return SyncResult("partial", time.monotonic() - start)
        except NftError as e:
            log.error("partial sync refused, falling back to a full sync: %s", e)
            self._needs_full = True
            refused = await self._full()
            return SyncResult("full", time.monotonic() - start, fallback=True, refused=refused)

    async def _full(self) -> dict[object, str]:
        existing = await self.nft.existing()
        try:
            await self.nft.apply(full_transaction(self.kernel.ruleset(), existing))
        except NftError as e:
            log.error("full sync refused; finding the fragments the kernel refuses: %s", e)
            refused = await self._lay_without_refused(existing)
        else:
            refused = {}
        self._needs_full = False
        self._changed.clear()
        return refused

    async def _lay_without_refused(self, existing: ExistingTable) -> dict[object, str]:
        fragments = dict(self.kernel.fragments)
        node: dict[object, Ruleset] = {NODE: fragments.pop(NODE)} if NODE in fragments else {}
        refused = await self._checked_out(node, fragments, existing)
        kept = {k: f for k, f in fragments.items() if k not in refused}
        try:
            await self.nft.apply(full_transaction(_ruleset({**node, **kept}), existing))
            self._keep_only({**node, **kept})
            return refused
        except NftError as e:  # refused only at commit, where --check does not look
            log.error("refused at commit although each part passed --check; adding changed fragments in halves: %s", e)
        accepted = {**node, **{k: f for k, f in kept.items() if k not in self._changed}}
        await self.nft.apply(full_transaction(_ruleset(accepted), existing))  # raises: nothing to isolate
        self._keep_only(accepted)
        return refused | await self._added_in_halves({k: f for k, f in kept.items() if k not in accepted})

    async def _checked_out(self, base: dict[object, Ruleset], candidates: dict[object, Ruleset],
                           existing: ExistingTable) -> dict[object, str]:
        """The candidates that `nft --check` refuses next to `base` and the candidates accepted before them."""
        accepted = dict(base)
        refused: dict[object, str] = {}

        async def search(group: list[object]) -> None:
            trial = {**accepted, **{k: candidates[k] for k in group}}
            try:
                await self.nft.check(full_transaction(_ruleset(trial), existing))
            except NftError as e:
                if len(group) == 1:
                    refused[group[0]] = str(e)
                    return
                await search(group[:len(group) // 2])
                await search(group[len(group) // 2:])
                return
            accepted.update(trial)

        if candidates:
            await search(list(candidates))
        return refused

    async def _added_in_halves(self, fragments: dict[object, Ruleset]) -> dict[object, str]:
        """Add fragments to what the kernel holds, in real transactions: a group the kernel refuses is halved."""
        if not fragments:
            return {}
        delta = self.kernel.apply(fragments)
        try:
            await self.nft.apply(incremental_transaction(delta))
            return {}
        except NftError as e:
            self.kernel.apply(dict.fromkeys(fragments))  # the kernel kept none of it
            keys = list(fragments)
            if len(keys) == 1:
                return {keys[0]: str(e)}
            first = await self._added_in_halves({k: fragments[k] for k in keys[:len(keys) // 2]})
            return first | await self._added_in_halves({k: fragments[k] for k in keys[len(keys) // 2:]})

    def _keep_only(self, fragments: dict[object, Ruleset]) -> None:
        self.kernel = KernelState()
        self.kernel.apply(fragments)


def _ruleset(fragments: Mapping[object, Ruleset]) -> Ruleset:
    state = KernelState()
    state.apply(fragments)
    return state.ruleset()
