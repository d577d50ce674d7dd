"""Kubernetes Events (core/v1), the way kubelet and controllers record them for `kubectl describe`."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
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


async def record_event(client: AsyncClient, obj: Any, *, type: Literal["Normal", "Warning"], reason: str,
                       message: str, component: str, host: str | None = None) -> None:
    """Create an Event about `obj`. Failing to record one never fails the caller's work."""
    now = dt.datetime.now(dt.UTC)
    namespace = obj.metadata.namespace or "default"
    event = Event(
        metadata=ObjectMeta(name=f"{obj.metadata.name}.{secrets.token_hex(8)}", namespace=namespace),
        involvedObject=object_reference(obj), reason=reason, message=message, type=type,
        source=EventSource(component=component, host=host), firstTimestamp=now, lastTimestamp=now, count=1,
        reportingComponent=component, reportingInstance=host or component,
    )
    try:
        await client.create(event)
    except Exception as e:
        log.warning("could not record event %s on %s: %s", reason, obj.metadata.name, e)
