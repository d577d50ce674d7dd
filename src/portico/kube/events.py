"""Kubernetes Events (core/v1), the way kubelet and controllers record them for `kubectl describe`."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import Any, Literal

from lightkube import AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

log = logging.getLogger(__name__)


def object_reference(obj: Any) -> ObjectReference:
    return ObjectReference(apiVersion=obj.apiVersion, kind=obj.kind, name=obj.metadata.name,
                           namespace=obj.metadata.namespace, uid=obj.metadata.uid,
                           resourceVersion=obj.metadata.resourceVersion)


EventType = Literal["Normal", "Warning"]


def new_event(obj: Any, *, type: EventType, reason: str, message: str, component: str,
              host: str | None = None) -> Event:
    now = dt.datetime.now(dt.UTC)
    namespace = obj.metadata.namespace or "default"
    return Event(
        metadata=ObjectMeta(name=f"{obj.metadata.name}.{secrets.token_hex(8)}", namespace=namespace),
        involvedObject=object_reference(obj), reason=reason, message=message, type=type,
        source=EventSource(component=component, host=host), firstTimestamp=now, lastTimestamp=now, count=1,
        reportingComponent=component, reportingInstance=host or component,
    )


async def record_event(client: AsyncClient, obj: Any, *, type: EventType, reason: str,
                       message: str, component: str, host: str | None = None) -> None:
    """Create an Event about `obj`. Failing to record one never fails the caller's work."""
    event = new_event(obj, type=type, reason=reason, message=message, component=component, host=host)
    try:
        await client.create(event)
    except Exception as e:
        log.warning("could not record event %s on %s: %s", reason, obj.metadata.name, e)


class EventRecorder:
    """Events off the reconcile path, as client-go's broadcaster sends them: `record` queues and returns at
    once, one task writes them in order. Events are best-effort by design; when the queue is full (the API
    server is slower than a burst) new ones are dropped and counted, never waited for.

    `busy` (optional) says the owner has more important writes waiting: then Events trickle, one per
    `busy_interval`, and the rest follow once it is idle -- under a burst of new Services their addresses
    are published first (an Event costs the API server about what a status write does)."""

    def __init__(self, client: AsyncClient, *, component: str, host: str | None = None,
                 max_queued: int = 1000, busy: Callable[[], bool] | None = None, busy_interval: float = 0.1) -> None:
        self.client, self.component, self.host = client, component, host
        self._queue: asyncio.Queue[Event] = asyncio.Queue(max_queued)
        self._busy, self.busy_interval = busy, busy_interval
        self.dropped = 0

    def record(self, obj: Any, *, type: EventType, reason: str, message: str) -> None:
        event = new_event(obj, type=type, reason=reason, message=message, component=self.component, host=self.host)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 100 == 1:
                log.warning("event queue full: dropped %d events so far (latest %s on %s)", self.dropped, reason,
                            obj.metadata.name)

    async def run(self) -> None:
        while True:
            event = await self._queue.get()
            if self._busy is not None and self._busy():
                await asyncio.sleep(self.busy_interval)
            try:
                await self.client.create(event)
            except Exception as e:
                assert event.involvedObject is not None
                log.warning("could not record event %s on %s: %s", event.reason, event.involvedObject.name, e)
