"""TrafficPolicy status, and Events where a policy overrides a Service's own settings (I/O at the edges).

Status follows Gateway API policy status: one entry per target under `ancestors` with an Accepted
condition (reasons Accepted, Conflicted, TargetNotFound, Invalid), plus a summary `Accepted` condition for
`kubectl get`. Level-triggered: computed from the caches and written only when it differs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient

from portico.api import v1alpha1 as api
from portico.api.resources import TrafficPolicyResource
from portico.controller.conditions import same_conditions, set_condition
from portico.kube.client import apply_status
from portico.kube.events import EventRecorder
from portico.policy.attachment import PolicyEntry, Standing, TargetStanding, governing, policy_from_object, standings
from portico.policy.traffic import overridden

log = logging.getLogger(__name__)

STATUS_MANAGER = "portico-controller"
ACCEPTED = "Accepted"


def _ancestor(policy: PolicyEntry, standing: TargetStanding, old: list[dict[str, Any]],
              generation: int | None) -> dict[str, Any]:
    conditions = set_condition(old, type=ACCEPTED, status=standing.standing == Standing.ACCEPTED,
                               reason=standing.standing.value, message=standing.message, generation=generation)
    return {"ancestorRef": {"group": "", "kind": "Service", "namespace": policy.namespace, "name": standing.target},
            "controllerName": api.TRAFFIC_POLICY_CONTROLLER, "conditions": conditions}


@dataclass
class TrafficPolicyReconciler:
    client: AsyncClient
    events: EventRecorder
    policies: Mapping[str, Any]  # informer caches
    services: Mapping[str, Any]
    is_ours: Callable[[Any], bool]
    reports: Mapping[str, Any]  # PorticoNodes: each node's health counts
    # The Services our Gateways' HTTPRoutes and our Ingresses send to (portico.l7.backend_policy.http_backends)
    http_backends: Callable[[], set[str]] = set
    _overrides: dict[str, list[str]] = field(default_factory=dict)  # Service key -> what was last said
    # Policy key -> (resourceVersion, decoded): Service events ask which policies name them, and must not decode
    # every policy of the namespace each time.
    _decoded: dict[str, tuple[str, PolicyEntry, api.TrafficPolicySpec]] = field(default_factory=dict)

    def _policy(self, obj: Any) -> tuple[PolicyEntry, api.TrafficPolicySpec]:
        key, version = f"{obj.metadata.namespace}/{obj.metadata.name}", obj.metadata.resourceVersion
        held = self._decoded.get(key)
        if held is None or held[0] != version:
            held = (version, *policy_from_object(obj))
            self._decoded[key] = held
        return held[1], held[2]

    def forget(self, key: str) -> None:
        """A policy is gone."""
        self._decoded.pop(key, None)

    def in_namespace(self, namespace: str) -> list[PolicyEntry]:
        return [self._policy(obj)[0] for obj in self.policies.values() if obj.metadata.namespace == namespace]

    def naming(self, service_key: str) -> list[str]:
        """The policies that name this Service (governing it or not)."""
        namespace, _, name = service_key.partition("/")
        return [p.key for p in self.in_namespace(namespace) if name in p.targets]

    def _served(self, key: str, http_backends: set[str]) -> bool | None:
        svc = self.services.get(key)
        return None if svc is None else self.is_ours(svc) or key in http_backends

    async def reconcile(self, key: str) -> None:
        obj = self.policies.get(key)
        if obj is None or obj.metadata.deletionTimestamp is not None:
            return
        policy, spec = self._policy(obj)
        winners = governing(self.in_namespace(policy.namespace))
        backends = self.http_backends()
        found = standings(policy, winners, lambda key: self._served(key, backends))
        current: dict[str, Any] = dict(obj.status or {})
        old = {a["ancestorRef"]["name"]: a.get("conditions", []) for a in current.get("ancestors", [])}
        generation = obj.metadata.generation
        ancestors = [_ancestor(policy, s, old.get(s.target, []), generation) for s in found]
        refused = [s for s in found if s.standing != Standing.ACCEPTED]
        summary = set_condition(current.get("conditions", []), type=ACCEPTED, status=not refused,
                                reason=refused[0].standing.value if refused else Standing.ACCEPTED.value,
                                message="; ".join(s.message for s in refused) or "governs every target",
                                generation=generation)
        for s in found:
            if s.standing == Standing.ACCEPTED:
                self._say_overrides(f"{policy.namespace}/{s.target}", spec, policy.name)
        targets = list(policy.targets)
        for s in refused:
            if not any(c.get("reason") == s.standing.value for c in old.get(s.target, [])):
                self.events.record(obj, type="Warning", reason=s.standing.value, message=s.message)
        status: dict[str, Any] = {"targets": targets, "ancestors": ancestors, "conditions": summary}
        if spec.healthCheck is not None:
            status["healthy"], status["total"] = self._health(
                {f"{policy.namespace}/{s.target}" for s in found if s.standing == Standing.ACCEPTED})
        unchanged = current.get("targets") == targets and same_conditions(current.get("conditions", []), summary) \
            and len(ancestors) == len(old) and all(
                same_conditions(old.get(a["ancestorRef"]["name"], []), a["conditions"]) for a in ancestors) \
            and (current.get("healthy"), current.get("total")) == (status.get("healthy"), status.get("total"))
        if unchanged:
            return
        await apply_status(self.client, TrafficPolicyResource, policy.name, status, field_manager=STATUS_MANAGER,
                           namespace=policy.namespace)

    def withdrawn(self, service: str) -> str | None:
        """Why the Service is withdrawn everywhere, if its governing policy says Withdraw and the nodes report no
        healthy endpoint of it."""
        namespace = service.partition("/")[0]
        entries = {e.key: e for e in self.in_namespace(namespace)}
        winner = governing(entries.values()).get(service)
        if winner is None:
            return None
        spec = self._policy(self.policies[winner.key])[1]
        check = spec.healthCheck
        if check is None or check.whenNoneHealthy != "Withdraw":
            return None
        healthy, total = self._health({service})
        if healthy or not total:
            return None
        return (f"none of its {total} endpoints is healthy ({check.type} check) and TrafficPolicy {winner.name} "
                "says whenNoneHealthy: Withdraw")

    def _health(self, services: set[str]) -> tuple[int, int]:
        """(healthy, total) endpoints of these Services, summed over the nodes that probe them."""
        healthy = total = 0
        for report in self.reports.values():
            for entry in (getattr(report, "status", None) or {}).get("health", []):
                if entry.get("service") in services:
                    healthy += int(entry.get("healthy", 0))
                    total += int(entry.get("total", 0))
        return healthy, total

    def _say_overrides(self, service_key: str, spec: api.TrafficPolicySpec, policy_name: str) -> None:
        svc = self.services.get(service_key)
        if svc is None:
            return
        messages = overridden(spec, policy_name, svc.metadata.annotations or {}, svc.spec)
        if messages == self._overrides.get(service_key, []):
            return
        self._overrides[service_key] = messages
        for message in messages:
            self.events.record(svc, type="Normal", reason="PolicyOverrides", message=message)
