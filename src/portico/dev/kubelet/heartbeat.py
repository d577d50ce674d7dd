"""The lab nodes' heartbeats to the control plane, as a kubelet's: a Lease in kube-node-lease renewed every
RENEW_SECONDS, and the Node's Ready condition posted when it is not True. A node whose LAN link is down is
dead to the cluster: nothing is renewed for it (its pods' status is not written either), so the node lifecycle
controller marks it NotReady after its grace period and its pods not ready, as in a real cluster. This is the
path Kubernetes itself takes when a node dies, which Portico's own node liveness is measured against.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import subprocess

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node, NodeStatus
from lightkube.types import PatchType

from portico.dev import addressing as a
from portico.dev.kubelet.status import timestamp
from portico.dev.topology import LAB_IFACE

log = logging.getLogger(__name__)
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40  # a kubelet's default
RENEW_SECONDS = 10.0  # a kubelet renews its Lease every 10 s
LINK_POLL_SECONDS = 1.0


def link_up(node: str) -> bool:
    """Whether the node's LAN interface is up, as the node itself sees it."""
    proc = subprocess.run(["ip", "-j", "-n", a.host_netns(node), "link", "show", "dev", LAB_IFACE],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return False
    links = json.loads(proc.stdout or "[]")
    return bool(links) and "UP" in links[0].get("flags", []) and links[0].get("operstate") != "DOWN"


class NodeHeartbeats:
    def __init__(self, client: AsyncClient, nodes: list[str]) -> None:
        self.client = client
        self.alive = dict.fromkeys(nodes, True)  # as far as the cluster can hear from each

    async def run(self) -> None:
        renewed: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            for node in self.alive:
                up = await asyncio.to_thread(link_up, node)
                came_back = up and not self.alive[node]
                self.alive[node] = up
                if up and (came_back or loop.time() - renewed.get(node, 0.0) >= RENEW_SECONDS):
                    try:
                        await self._renew(node)
                        renewed[node] = loop.time()
                    except ApiError as e:
                        log.warning("heartbeat of node %s: %s", node, e.status.message)
            await asyncio.sleep(LINK_POLL_SECONDS)

    async def _renew(self, node: str) -> None:
        now = dt.datetime.now(dt.UTC)
        spec = {"holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        try:
            await self.client.patch(Lease, node, {"spec": spec}, namespace=LEASE_NAMESPACE,
                                    patch_type=PatchType.MERGE)
        except ApiError as e:
            if e.status.code != 404:
                raise
            await self.client.create(Lease(metadata=ObjectMeta(name=node, namespace=LEASE_NAMESPACE),
                                           spec=LeaseSpec(**spec)))  # type: ignore[arg-type]
        current = await self.client.get(Node, node)
        conditions = (current.status.conditions or []) if current.status else []
        ready = next((c for c in conditions if c.type == "Ready"), None)
        if ready is None or ready.status != "True":
            stamp = timestamp(now)
            await self.client.patch(NodeStatus, node, {"status": {"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "lab kubelet is posting ready status", "lastHeartbeatTime": stamp,
                 "lastTransitionTime": stamp}]}}, patch_type=PatchType.STRATEGIC)
