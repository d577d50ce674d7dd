"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

The holder renews every `retry_period`; others take over once `lease_duration` has passed
without a renewal *as they observe it*: expiry is judged by when this process last saw the
record change, on its own monotonic clock, never by comparing the holder's timestamps with our
wall clock (a skewed clock would otherwise make a dead leader's lease look fresh forever, or a
live one's look stale). A leader that cannot renew within `renew_deadline` stops leading (the
process then exits and restarts as a follower). A leader that stops cleanly (SIGTERM) releases
the lease, so its standby takes over at once instead of after `lease_duration`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

log = logging.getLogger(__name__)


class LostLeadership(Exception):
    pass


class LeaderElector:
    def __init__(self, client: AsyncClient, *, namespace: str, name: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        self.client, self.namespace, self.name, self.identity = client, namespace, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.is_leader = False
        self._observed: tuple[Any, ...] | None = None  # the lease record as last read
        self._observed_at = 0.0  # when it last changed, on our monotonic clock

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Wait for the lease, then run `lead()` while holding it. Raises LostLeadership if it is lost."""
        while True:  # poll: another holder's lease can only be taken once it has expired
            if await self._try_acquire_or_renew():
                break
            await asyncio.sleep(self.retry_period)
        self.is_leader = True
        log.info("became leader (lease %s/%s)", self.namespace, self.name)
        leading = asyncio.create_task(lead())
        try:
            last_renew = asyncio.get_running_loop().time()
            while not leading.done():
                await asyncio.wait({leading}, timeout=self.retry_period)
                if leading.done():
                    break
                if await self._try_acquire_or_renew():
                    last_renew = asyncio.get_running_loop().time()
                elif asyncio.get_running_loop().time() - last_renew > self.renew_deadline:
                    raise LostLeadership(f"could not renew lease {self.namespace}/{self.name}")
            await leading
        finally:
            self.is_leader = False
            leading.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._release()), self.retry_period)

    async def _release(self) -> None:
        """Give the lease up (client-go's ReleaseOnCancel): no holder, one second long."""
        lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        if lease.spec is None or lease.spec.holderIdentity != self.identity:
            return
        now = dt.datetime.now(dt.UTC)
        lease.spec.holderIdentity, lease.spec.leaseDurationSeconds = None, 1
        lease.spec.renewTime = lease.spec.acquireTime = now
        await self.client.replace(lease)
        log.info("released lease %s/%s", self.namespace, self.name)

    async def _try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        try:
            lease = await self.client.get(Lease, self.name, namespace=self.namespace)
        except ApiError as e:
            if e.status.code != 404:
                log.warning("reading lease: %s", e.status.message)
                return False
            lease = Lease(metadata=ObjectMeta(name=self.name, namespace=self.namespace), spec=LeaseSpec(
                holderIdentity=self.identity, leaseDurationSeconds=int(self.lease_duration), acquireTime=now,
                renewTime=now, leaseTransitions=0))
            try:
                await self.client.create(lease)
                return True
            except ApiError:
                return False
        spec = lease.spec or LeaseSpec()
        held_by_other = spec.holderIdentity not in (None, "", self.identity)
        record = (spec.holderIdentity, spec.renewTime, spec.acquireTime, spec.leaseTransitions,
                  spec.leaseDurationSeconds)
        seen = asyncio.get_running_loop().time()
        if record != self._observed:
            self._observed, self._observed_at = record, seen
        duration = spec.leaseDurationSeconds or self.lease_duration
        if held_by_other and seen < self._observed_at + duration:
            return False
        if held_by_other or spec.holderIdentity != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.holderIdentity, spec.renewTime = self.identity, now
        spec.leaseDurationSeconds = int(self.lease_duration)
        lease.spec = spec
        try:
            await self.client.replace(lease)  # carries resourceVersion: a racing writer gets 409
            return True
        except ApiError as e:
            log.info("lease update refused: %s", e.status.message)
            return False
