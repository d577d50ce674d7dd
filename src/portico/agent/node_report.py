"""This node's PorticoNode: what the agent does and sees, for the controller to turn into status.

It is the agent's only status write, so the agents' RBAC needs no Service or announcement object at
all. Level-triggered: the wanted status is compared with the object as the informer shows it now (a
wiped or recreated object is written again), on every wake and at least once a second. The object is
owned by the Node, so the garbage collector removes it with the node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType

from portico.api.resources import PorticoNodeResource
from portico.api.v1alpha1 import API_VERSION, PorticoNode, PorticoNodeStatus
from portico.kube.client import apply_status, error_text

log = logging.getLogger(__name__)

FIELD_MANAGER = "portico-agent"
REFRESH_SECONDS = 1.0  # a change nobody woke us for (a BGP session state) is written within this
COALESCE_SECONDS = 0.05


def normalized(status: Mapping[str, Any]) -> dict[str, Any]:
    """A status for comparison: absent lists as empty, lists in a stable order."""
    out: dict[str, Any] = {}
    for key in PorticoNodeStatus.__struct_fields__:  # every field is a list, but the heartbeat endpoint
        out[key] = status.get(key) if key == "heartbeat" else sorted(status.get(key) or [], key=repr)
    return out


class NodeReporter:
    def __init__(self, client: AsyncClient, node: str, reports: Mapping[str, Any], nodes: Mapping[str, Any],
                 report: Callable[[], dict[str, Any]], *, watched: Sequence[asyncio.Event] = ()) -> None:
        """`report()` is the wanted status; `watched`: changes worth writing at once (the others are found within
        REFRESH_SECONDS), each an Event this reporter clears."""
        self.client, self.node, self.reports, self.nodes, self.report = client, node, reports, nodes, report
        self._wake = asyncio.Event()
        self._watched = (self._wake, *watched)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            waits = [asyncio.ensure_future(e.wait()) for e in self._watched]
            await asyncio.wait(waits, timeout=REFRESH_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            await asyncio.sleep(COALESCE_SECONDS)
            for event in self._watched:
                event.clear()
            try:
                await self._converge()
            except Exception as e:  # the API unreachable (our link is down), or a conflict: next round
                log.info("PorticoNode %s not written (%s); will retry", self.node, error_text(e))

    async def _converge(self) -> None:
        obj = self.reports.get(self.node)
        if obj is None:
            await self._create()
        wanted = self.report()
        current = dict(getattr(obj, "status", None) or {}) if obj is not None else {}
        if normalized(current) != normalized(wanted):
            await apply_status(self.client, PorticoNodeResource, self.node, wanted, field_manager=FIELD_MANAGER)

    async def _create(self) -> None:
        node = self.nodes.get(self.node)
        if node is None:
            return  # the Node object first: the report is owned by it
        body = {"apiVersion": API_VERSION, "kind": PorticoNode.KIND, "metadata": {
            "name": self.node, "labels": {"app.kubernetes.io/part-of": "portico"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node.metadata.uid}]}}
        await self.client.patch(PorticoNodeResource, self.node, body, patch_type=PatchType.APPLY,
                                field_manager=FIELD_MANAGER, force=True)
