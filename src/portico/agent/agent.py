"""The agent on one node, as a one-way flow:

  caches (informers, indexes, what changed)                                     agent.caches
    -> health: probing this node's endpoints (every node's results: an input)   agent.health
    -> readiness gates: this node's gated pods (every node's: an input)         agent.readiness
    -> forwarding: the changed Services' frontends into the kernel's table      agent.forwarding
    -> L7: Gateways and their routes into HAProxy on this node                  agent.l7
    -> this node's announcement view (pure: what it may answer for, advertise)  agent.announcements
    -> layer 2 (ARP/NDP, heartbeats) and BGP (GoBGP, BFD)                        announce.announcer, agent.bgp
    -> this node's report (its PorticoNode), for the controller                 agent.node_report
    -> gated pods every node forwards to pass their gate                        agent.readiness

Each consumer owns one job and reads what the stages before it produced; none calls back up. Level-triggered
and batched: every change marks its Service dirty, and one sync loop turns all dirty Services into one
nftables transaction (after a short coalescing window, so a rollout's burst of EndpointSlice updates costs
few transactions), then recomputes the announcement view from what is programmed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any
from wsgiref.simple_server import WSGIServer

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError

from portico.agent.announcements import advertisement_problems, l2_vips
from portico.agent.bgp import BgpAnnouncements
from portico.agent.caches import AgentCaches
from portico.agent.forwarding import Forwarding
from portico.agent.health import AgentHealth
from portico.agent.heartbeat_keys import HeartbeatKeys
from portico.agent.l7 import L7Serving
from portico.agent.liveness import NodeLiveness
from portico.agent.metrics import AgentMetrics
from portico.agent.node_report import NodeReporter
from portico.agent.readiness import ReadinessGates
from portico.agent.restart import restart_hold
from portico.announce.announcer import L2Announcer
from portico.announce.links import interface_state
from portico.api.resources import PorticoNodeResource
from portico.api.v1alpha1 import RETIRE_ANNOTATION
from portico.dataplane.drift import TableWatch
from portico.dataplane.local_delivery import remove_local_delivery
from portico.dataplane.nft import Nft
from portico.kube.events import EventRecorder
from portico.kube.informer import run_synced
from portico.ports import HEARTBEAT_PORT
from portico.serving import serve

log = logging.getLogger(__name__)

COMPONENT = "portico-agent"
COALESCE_SECONDS = 0.02  # a burst of watch events becomes one transaction
RETIRE_POLL_SECONDS = 0.5


class Retired(Exception):
    """`portico uninstall` asked this agent to withdraw and remove what it made."""


class Agent:
    def __init__(self, client: AsyncClient, node: str, nft: Nft | None = None, *, namespace: str = "portico-system",
                 heartbeat_port: int = HEARTBEAT_PORT, node_liveness: bool = True,
                 http_access_log: bool = True) -> None:
        self.node, self.client, self.namespace = node, client, namespace
        self.events = EventRecorder(client, component=COMPONENT, host=node)
        self.caches = AgentCaches(client, node, namespace)
        self.l2 = L2Announcer(node, self._record, heartbeat_port=heartbeat_port)
        self.health = AgentHealth(node, self.l2.mesh, self.events, self.caches)
        self.liveness = NodeLiveness(self.l2.mesh, self.caches, enabled=node_liveness)
        self.gates = ReadinessGates(client, self.caches, self.l2.mesh)
        # A peer's health view (down and gated endpoints) changed: its Services are programmed again, and the
        # view acknowledged once they are (sync_once).
        self.l2.mesh.on_health = lambda peer, services: self.caches.mark_all(services)
        self.forwarding = Forwarding(node, nft or Nft(), self.events, down_for=self.l2.mesh.down_for,
                                     dead_nodes=lambda: self.liveness.out, gated_for=self.l2.mesh.gated_for)
        self.l7 = L7Serving(node, self.caches, down_for=self.l2.mesh.down_for, dead_nodes=lambda: self.liveness.out,
                            gated_for=self.l2.mesh.gated_for, access_log=http_access_log)
        self.table_watch = TableWatch(self.forwarding.syncer.nft, self._on_drift)
        self.heartbeat_keys = HeartbeatKeys(client, namespace, self.l2.set_keys)
        self.bgp = BgpAnnouncements(node, self._record)
        self.advertisement_problems: dict[str, list[str]] = {}  # L2Advertisement -> why not answering there
        self.reporter = NodeReporter(client, node, self.caches.reports.cache, self.caches.nodes.cache,
                                     self._node_report, watched=[self.l2.changed, self.caches.own_report_changed])
        self.metrics = AgentMetrics(self.forwarding.syncer.nft, service_of=self.forwarding.service_of,
                                    applied=self.forwarding.applied,
                                    problems=lambda: dict(self.forwarding.problems), l2=self.l2, bgp=self.bgp,
                                    health=self.health, liveness=self.liveness, haproxy=self.l7.haproxy)

    def _on_drift(self, what: str) -> None:
        """Someone else changed our table: lay it again from the desired state (a full sync)."""
        log.warning("the table was changed by someone else (%s); repairing it", what)
        self.metrics.table_repairs.inc()
        self.forwarding.syncer.resync()
        self.caches.changed.set()

    # -- running --------------------------------------------------------------------------------------
    async def prepare_stop(self, pod_generation: str | None) -> None:
        """Before the stop: whether peers should hold this node's VIPs (a restart) or take them over."""
        self.l2.mesh.restart_hold = await restart_hold(self.client, self.namespace, pod_generation)

    def serve(self, address: str, port: int) -> WSGIServer:
        """/metrics, /healthz and /readyz on address:port (port 0: any; the server says which)."""
        return serve(address, port, self.metrics.registry, self.metrics.bridge, self.readiness)

    def readiness(self) -> str | None:
        if not self.caches.synced:
            return "informer caches not synced yet"
        if not self.forwarding.data_path_ok:
            return "rules not programmed: the first sync has not completed, or the last one failed"
        return None

    async def run(self) -> None:
        self.metrics.bridge.loop = asyncio.get_running_loop()
        caches = self.caches

        def started() -> list[Coroutine[Any, Any, None]]:
            caches.synced = True
            log.info("caches synced: %d services, %d endpoint slices, %d allocations", len(caches.services.cache),
                     len(caches.slices.cache), len(caches.allocations.cache))
            return [self._sync_forever(), self.l7.run(), self.table_watch.run(), self.heartbeat_keys.run(),
                    self.health.run(), self.gates.run(),
                    caches.bgp.read_secrets_forever(), self.l2.run(), self.bgp.run(), self.reporter.run(),
                    self._until_retired()]
        try:
            await run_synced(caches.informers(), [self.events.run()], started)
        except Retired:
            await self._retire()

    async def _until_retired(self) -> None:
        """Raise Retired once `portico uninstall` asks this node's agent to go (an annotation on its PorticoNode)."""
        while True:
            report = self.caches.reports.cache.get(self.node)
            if report is not None and report.metadata and RETIRE_ANNOTATION in (report.metadata.annotations or {}):
                raise Retired
            await asyncio.sleep(RETIRE_POLL_SECONDS)

    async def _retire(self) -> None:
        """Everything else has stopped (its last heartbeat handed the VIPs over, GoBGP withdrew): remove the table
        and this node's PorticoNode, then idle until the pod is deleted (exiting would restart the agent)."""
        log.warning("Portico is being uninstalled: removing the nftables table and this node's PorticoNode")
        await self.forwarding.syncer.nft.delete_table()
        remove_local_delivery()
        try:
            await self.client.delete(PorticoNodeResource, self.node)
        except ApiError as e:
            if e.status.code != 404:
                raise
        await asyncio.Event().wait()

    async def _sync_forever(self) -> None:
        while True:
            await self.caches.changed.wait()
            await asyncio.sleep(COALESCE_SECONDS)
            self.caches.changed.clear()
            try:
                await self.sync_once()
            except Exception:
                log.exception("sync failed; retrying")
                await asyncio.sleep(1)

    async def sync_once(self) -> None:
        dirty, node_dirty = self.caches.take_changes()
        dirty |= self.gates.update()
        held, programming = self.gates.reflected(self.l2.mesh.held()), self.gates.before_sync()
        self.health.update(dirty)
        try:
            result = await self.forwarding.sync(self.caches, dirty, node_dirty, self.l2.heartbeat_port)
        except Exception:
            self.caches.put_back(dirty, node_dirty)  # the next sync (a full one) tries them again
            self.metrics.sync_failures.inc()
            self._update_announcements()  # rules may be missing: withdraw at once
            raise
        self.l2.mesh.acknowledge(held)
        self.gates.synced(programming)
        self._update_announcements()
        await self.forwarding.forget_stale_flows()
        if result.fallback:
            self.metrics.sync_failures.inc()
        if result.kind != "none":
            self.metrics.sync_seconds.labels(result.kind).observe(result.seconds)
            log.info("%s sync of %d services in %.1f ms%s", result.kind, len(dirty), result.seconds * 1000,
                     " (after a refused partial one)" if result.fallback else "")
        applied_at = time.time()
        for key in dirty:
            for trigger in self.caches.triggered.pop(key, ()):
                self.metrics.programming_seconds.observe(max(0.0, applied_at - trigger))

    # -- announcements ----------------------------------------------------------------------------------
    def _update_announcements(self) -> None:
        """This node's announcement view from the caches and what forwarding programmed, to both announcers."""
        caches, forwarding = self.caches, self.forwarding
        labels, interface = caches.labels(), forwarding.default_interface
        vips = l2_vips(self.node, labels=labels, default_interface=interface,
                       advertisements=caches.l2_specs.values(), allocations=caches.allocated,
                       policies_of=forwarding.policies_of, is_local=caches.is_local)
        self.advertisement_problems = {
            key: problems for key, spec in caches.l2_specs.items()
            if (problems := advertisement_problems(self.node, labels, interface, spec, interface_state))}
        self.l2.set_node(caches.internal_ip(), caches.peers())
        self.l2.set_vips(vips, forwarding.data_path_ok)
        self.bgp.update(caches.bgp, labels=labels, address=caches.internal_ip(), allocations=caches.allocated,
                        policies_of=forwarding.policies_of, is_local=caches.is_local,
                        data_path_ok=forwarding.data_path_ok)
        self.reporter.wake()

    def _record(self, service: str, type: str, reason: str, message: str) -> None:
        svc = self.caches.services.cache.get(service)
        if svc is not None:
            self.events.record(svc, type="Warning" if type == "Warning" else "Normal", reason=reason,
                               message=message)

    def _node_report(self) -> dict[str, Any]:
        """This node's PorticoNode status: what it does (layer 2, BGP), hears, and cannot do."""
        endpoint = self.l2.heartbeat_endpoint()
        return {
            "heartbeat": {"address": str(endpoint[0]), "port": endpoint[1]} if endpoint is not None else None,
            "layer2": [str(v) for v in sorted(self.l2.owned, key=lambda a: (a.version, int(a)))],
            "bgp": [str(v) for v in sorted(self.bgp.advertised, key=lambda a: (a.version, int(a)))],
            "unreachable": self.l2.unreachable(),
            "forwardingProblems": [{"service": k, "message": "; ".join(v)}
                                   for k, v in sorted(self.forwarding.problems.items()) if v],
            "bgpSessions": self.bgp.session_reports(),
            "l2Problems": [{"advertisement": k, "message": "; ".join(v)}
                           for k, v in sorted(self.advertisement_problems.items()) if v],
            "health": [{"service": k, "healthy": healthy, "total": total}
                       for k, (healthy, total) in sorted(self.health.checker.counts().items())],
        }
