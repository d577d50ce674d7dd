"""Portico's readiness gate on this node (see portico.policy.readiness): this node's gated pods go out in its
heartbeats, and each passes once every node forwards to it.

Two parts, on either side of the one-way flow, like agent.health:
  * an input: the gated view (this node's, into its heartbeats; forwarding reads every node's from the mesh's
    `gated_for` when it programs);
  * a consumer: after each sync, a gated pod this node's rules reflect and every live peer has acknowledged
    gets its condition set True (a status patch of a pod on this node, which is all the agent may write).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import PodStatus
from lightkube.types import PatchType

from portico.agent.caches import AgentCaches
from portico.agent.desired import FAMILY_OF_ADDRESS_TYPE
from portico.announce.heartbeat import HeartbeatMesh, HeldView, changed_services
from portico.ipam.blocks import IPAddress
from portico.policy.readiness import GatedPod, condition, gated_pods, gated_view, lists_all

log = logging.getLogger(__name__)

POLL_SECONDS = 0.02  # while a pod waits: how often the peers' acknowledgements are looked at
RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class Programmed:
    """What a sync put in this node's rules: its own view's generation, and the gated pods listed then."""
    health: int
    listed: frozenset[str]  # pod keys whose addresses every selecting Service's slices list


class ReadinessGates:
    def __init__(self, client: AsyncClient, caches: AgentCaches, mesh: HeartbeatMesh) -> None:
        self.client, self.caches, self.mesh = client, caches, mesh
        self.pods: dict[str, GatedPod] = {}
        # pod key -> (its Services and addresses in the view, the generation of this node's view that first held them)
        self.entered: dict[str, tuple[tuple[tuple[str, ...], tuple[IPAddress, ...]], int]] = {}
        self.programmed = Programmed(0, frozenset())
        self._written: dict[str, int] = {}  # pod key -> the resourceVersion our condition write returned
        self._waiting = asyncio.Event()

    # -- the input: this node's gated pods, and every node's -------------------------------------------
    def update(self) -> set[str]:
        """This node's gated pods from the caches now (into its heartbeats); the Services whose view changed."""
        caches = self.caches
        found = gated_pods(caches.pods.cache.values(), caches.services.cache.values(),
                           lambda svc: bool(caches.vips_of.get(svc.metadata.uid)))
        self.pods = {p.key: p for p in found}
        before, view = self.mesh.gated, gated_view(found)
        self.mesh.set_gated(view)
        for key in set(self.entered) - set(self.pods):
            del self.entered[key]
        for key in set(self._written) - set(self.pods):
            del self._written[key]
        for pod in found:
            held = (pod.services, pod.addresses)
            if pod.key not in self.entered or self.entered[pod.key][0] != held:  # new, or another Service's too
                self.entered[pod.key] = (held, self.mesh.health)
            if pod.passed or pod.version > self._written.get(pod.key, pod.version):
                self._written.pop(pod.key, None)  # passed, or someone wrote it since (the condition was lost)
        if any(not p.passed and p.key not in self._written for p in found):
            self._waiting.set()
        return changed_services(before, view)

    def reflected(self, held: dict[str, HeldView]) -> dict[str, HeldView]:
        """The peers' views the coming sync will have programmed: those whose every gated endpoint belongs to a
        Service with an address here and is listed by its slices (else the rules could not forward to it yet;
        a later sync, when the slice or the address arrives, acknowledges it)."""
        return {name: view for name, view in held.items()
                if all(self._programmable(s, [ip for ip, _ in endpoints]) for s, endpoints in view.gated.items())}

    def _programmable(self, service: str, addresses: Iterable[IPAddress]) -> bool:
        """Whether rules for this Service can forward to these addresses: it has an address here, and its slices
        list each of them of the Service's IP families."""
        svc: Any = self.caches.services.cache.get(service)
        if svc is None or svc.spec is None or not self.caches.vips_of.get(svc.metadata.uid):
            return False
        families = {FAMILY_OF_ADDRESS_TYPE[f] for f in svc.spec.ipFamilies or ["IPv4"] if f in FAMILY_OF_ADDRESS_TYPE}
        return lists_all(self.caches.slices_for(service), [a for a in addresses if a.version in families])

    # -- the consumer: let the gate pass -----------------------------------------------------------------
    def before_sync(self) -> Programmed:
        """What the coming sync will program, from the caches as it reads them."""
        listed_now = frozenset(p.key for p in self.pods.values()
                               if all(self._programmable(s, p.addresses) for s in p.services))
        return Programmed(self.mesh.health, listed_now)

    def synced(self, programmed: Programmed) -> None:
        self.programmed = programmed
        self._waiting.set()

    def passing(self) -> list[tuple[GatedPod, int]]:
        """The waiting pods every node forwards to now, with how many nodes that is (0: nothing to program)."""
        if not self.mesh.settled:
            return []  # a peer not heard yet may be alive: wait until every live one has had the time to be
        peers = self.mesh.alive()
        out = []
        for pod in self.pods.values():
            if pod.passed or pod.key in self._written:
                continue
            if not pod.services:
                out.append((pod, 0))
                continue
            entered = self.entered[pod.key][1]
            if (pod.key in self.programmed.listed and self.programmed.health >= entered
                    and all(peer.acked >= entered for peer in peers.values())):
                out.append((pod, 1 + len(peers)))
        return out

    async def run(self) -> None:
        while True:
            await self._waiting.wait()
            self._waiting.clear()
            for pod, nodes in self.passing():
                await self._pass(pod, nodes)
            if any(not p.passed and p.key not in self._written for p in self.pods.values()):
                self._waiting.set()
                await asyncio.sleep(POLL_SECONDS)

    async def _pass(self, pod: GatedPod, nodes: int) -> None:
        namespace, name = pod.key.split("/", 1)
        passed = condition(nodes, dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        patch: dict[str, Any] = {"metadata": {"uid": pod.uid}, "status": {"conditions": [passed]}}
        try:
            done = await self.client.patch(PodStatus, name, patch, namespace=namespace,
                                           patch_type=PatchType.STRATEGIC)
        except ApiError as e:
            if e.status.code != 404:
                log.warning("readiness gate of pod %s: %s", pod.key, e.status.message)
                await asyncio.sleep(RETRY_SECONDS)
            return
        assert done.metadata is not None
        self._written[pod.key] = int(done.metadata.resourceVersion or 0)
        log.info("pod %s passes its readiness gate (%s)", pod.key, passed["message"])
