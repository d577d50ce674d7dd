"""A level-triggered informer: list, then watch from the list's resourceVersion.

On any watch failure (including 410 Gone, after which lightkube would silently restart the watch
without reporting deletions) it relists and diffs against its cache, so the consumer is told
about every object that changed or vanished while the watch was down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, TypeVar

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource
from lightkube.types import OnErrorAction, OnErrorResult

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Any)  # a lightkube resource class instance

UNSERVED_RETRY = 10.0  # seconds between lists of an optional resource that is not served

# Called with (old, new): (None, obj) added, (obj, obj2) updated, (obj, None) deleted.
Handler = Callable[[R | None, R | None], None]


def object_key(obj: Any) -> str:
    meta = obj.metadata
    return f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name


def _raise(_e: Exception, _count: int) -> OnErrorResult:
    return OnErrorResult(OnErrorAction.RAISE)


class Informer(Generic[R]):
    def __init__(self, client: AsyncClient, resource: type[R], handler: Handler[R], *,
                 namespace: str | None = None, fields: dict[str, Any] | None = None,
                 labels: dict[str, Any] | None = None, page_size: int = 500,
                 transform: Callable[[R], R] | None = None, optional: bool = False) -> None:
        """`transform`: what is kept of each object (say, a Secret's data only when it is a certificate), applied
        before the cache and the handler see it. `optional`: the resource may not be served (CRDs not installed):
        that counts as synced and empty, and the list is retried until it is."""
        self._client = client
        self._resource = resource
        self._handler = handler
        self._namespace = "*" if namespace is None and issubclass(resource, NamespacedResource) else namespace
        self._fields = fields
        self._labels = labels
        self._page_size = page_size
        self._transform = transform
        self._optional = optional
        self.cache: dict[str, R] = {}
        self.synced = asyncio.Event()
        self.handler_errors = 0  # events whose handler raised (logged; the informer went on)

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                version = await self._relist()
                backoff = 0.2
                await self._watch(version)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self._optional and _not_found(e):
                    await self._unserved()
                    continue
                await self._failed(e, backoff)  # every other failure ends in a relist, after a back-off
                backoff = min(backoff * 2, 10.0)

    async def _unserved(self) -> None:
        if not self.synced.is_set():
            log.warning("%s is not served (its CRD is not installed?); listing again every %.0fs",
                        self._resource.__name__, UNSERVED_RETRY)
        for key in list(self.cache):
            self._notify(self.cache.pop(key), None)
        self.synced.set()
        await asyncio.sleep(UNSERVED_RETRY)

    async def _failed(self, e: Exception, backoff: float) -> None:
        expired = isinstance(e, ApiError) and e.status.code == 410
        (log.info if expired else log.warning)("%s watch ended (%s); relisting", self._resource.__name__, e)
        await asyncio.sleep(0 if expired else backoff)

    async def _relist(self) -> str:
        listing = self._client.list(self._resource, namespace=self._namespace, chunk_size=self._page_size,
                                    fields=self._fields, labels=self._labels)
        fresh: dict[str, R] = {}
        async for obj in listing:
            fresh[object_key(obj)] = self._kept(obj)
        for key in list(self.cache):
            if key not in fresh:
                self._notify(self.cache.pop(key), None)
        for key, obj in fresh.items():
            old = self.cache.get(key)
            self.cache[key] = obj
            if old is None or old.metadata.resourceVersion != obj.metadata.resourceVersion:
                self._notify(old, obj)
        self.synced.set()
        return listing.resourceVersion

    async def _watch(self, version: str) -> None:
        async for kind, obj in self._client.watch(self._resource, namespace=self._namespace,
                                                  fields=self._fields, labels=self._labels,
                                                  resource_version=version, on_error=_raise):
            key = object_key(obj)
            if kind == "DELETED":
                old = self.cache.pop(key, None)
                if old is not None:
                    self._notify(old, None)
            elif kind in ("ADDED", "MODIFIED"):
                kept = self._kept(obj)
                old = self.cache.get(key)
                self.cache[key] = kept
                self._notify(old, kept)

    def _kept(self, obj: R) -> R:
        return self._transform(obj) if self._transform is not None else obj

    def _notify(self, old: R | None, new: R | None) -> None:
        """A handler that raises is a bug to log, not a reason to stop watching: the cache stays right, and the
        other objects' events keep coming (a raise here used to end the watch, and the relist raised again)."""
        try:
            self._handler(old, new)
        except Exception:
            self.handler_errors += 1
            log.exception("%s handler failed for %s", self._resource.__name__, object_key(new or old))


def _not_found(e: Exception) -> bool:
    """A 404 for the resource itself: lightkube raises its HTTP client's status error when the body is not a Status
    (no such API), whichever httpx that is."""
    if isinstance(e, ApiError):
        return e.status.code == 404
    return getattr(getattr(e, "response", None), "status_code", None) == 404


async def run_synced(informers: Iterable[Informer[Any]], background: Iterable[Coroutine[Any, Any, None]],
                     after_sync: Callable[[], Iterable[Coroutine[Any, Any, None]]]) -> None:
    """Run the informers and `background`; once every cache is synced, also what `after_sync()` returns.
    Ends (or raises) when any of them does, cancelling the rest."""
    informers = list(informers)
    tasks = [asyncio.create_task(i.run(), name=f"informer {type(i).__name__}") for i in informers]
    tasks += [asyncio.create_task(c) for c in background]
    try:
        await asyncio.gather(*(i.synced.wait() for i in informers))
        tasks += [asyncio.create_task(c) for c in after_sync()]
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
