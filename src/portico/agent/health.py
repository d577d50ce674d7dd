"""Active health in the agent: this node probes its own endpoints, and every node's results make one view.

Two parts, on either side of the one-way flow:
  * probing is a consumer of the caches: for each Service a TrafficPolicy with a healthCheck governs, this
    node's ready endpoints are its targets (`HealthChecker`);
  * the view is an input, like the caches: this node's results and those its peers' heartbeats carry. A
    change marks the Service dirty; forwarding reads the mesh's `down_for` when it next programs it.
The API server sees transitions (Events) and aggregates (this node's report), never a probe.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from portico.agent.caches import AgentCaches
from portico.announce.heartbeat import HeartbeatMesh
from portico.health.checker import HealthChecker, Transition
from portico.health.checks import ADDRESS, check_of, local_targets
from portico.kube.events import EventRecorder

log = logging.getLogger(__name__)


class AgentHealth:
    def __init__(self, node: str, mesh: HeartbeatMesh, events: EventRecorder, caches: AgentCaches) -> None:
        self.node, self.mesh, self.events, self.caches = node, mesh, events, caches
        self.checker = HealthChecker(self._transition)
        self.transitions: Counter[tuple[str, str]] = Counter()  # (Service, "down" or "up") -> count

    # -- probing: a consumer of the caches ----------------------------------------------------------------
    def update(self, dirty: Iterable[str]) -> None:
        """Targets for these Services, from what the caches say now."""
        changed = False
        for key in dirty:
            svc: Any = self.caches.services.cache.get(key)
            policy = self.caches.policy_of.get(key)
            spec = policy.healthCheck if policy is not None else None
            if svc is None or spec is None or svc.spec is None:
                changed |= self.checker.set_service(key, None, ())
                continue
            check = check_of(spec)
            targets = local_targets(key, check, svc.spec.ports or [], self.caches.slices_for(key), self.node)
            changed |= self.checker.set_service(key, check, targets)
        if changed:
            self.mesh.set_down(self.checker.down)

    async def run(self) -> None:
        await self.checker.run()

    def _transition(self, t: Transition) -> None:
        self.transitions[t.target.service, "up" if t.up else "down"] += 1
        self.mesh.set_down(self.checker.down)
        self.caches.mark_all({t.target.service})
        where = f"{t.target.ip}" if t.target.port == ADDRESS else f"{t.target.ip}:{t.target.port}"
        pod = f" (pod {t.target.pod} on {self.node})" if t.target.pod else f" (on {self.node})"
        if t.up:
            message = f"endpoint {where}{pod} is healthy again: {t.check.rise} {t.check.type} checks passed"
        else:
            message = f"endpoint {where}{pod} is down: {t.check.type} check failed ({t.why})"
        log.info("%s: %s", t.target.service, message)
        svc = self.caches.services.cache.get(t.target.service)
        if svc is not None:
            self.events.record(svc, type="Normal" if t.up else "Warning",
                               reason="BackendHealthy" if t.up else "BackendUnhealthy", message=message)


