"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection does it.

The holder renews every `retry_period`; others take over once `lease_duration` has passed
without a renewal. A leader that cannot renew within `renew_deadline` stops leading (the
process then exits and restarts as a follower): two leaders never act at once for longer
than the clocks' skew.
"""

from __future__ import annotations

import asyncio
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
        renewed = spec.renewTime or spec.acquireTime
        duration = dt.timedelta(seconds=spec.leaseDurationSeconds or self.lease_duration)
        if held_by_other and renewed is not None and renewed + duration > now:
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
