"""Portico's pod readiness gate (pure): which of a node's pods wait on it, and what every node forwards to.

A pod opts in with `spec.readinessGates: [{conditionType: portico.io/programmed}]` (AWS's load balancer
controller offers the same). Kubernetes then calls the pod ready only once that condition is True, so until
then its EndpointSlice lists it not ready: the agents learn of it from the node that runs it instead. Each
agent watches its own node's pods; a pod whose containers are ready and that a Service with a Portico address
selects is *gated*: its node's agent puts its addresses in the gated set its heartbeats carry, and every agent
forwards to it as if it were ready. Once this node's rules and every live peer's reflect it (the heartbeats'
acknowledgements say so), the agent sets the condition True: a rollout, which waits for Ready, cannot outrun
the data plane. A gated pod no such Service selects passes at once: Portico has nothing to program for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from portico.health.checks import ADDRESS, Endpoint
from portico.ipam.blocks import IPAddress

READINESS_GATE = "portico.io/programmed"  # the pod condition type a readiness gate names


@dataclass(frozen=True)
class GatedPod:
    key: str  # namespace/name
    uid: str
    addresses: tuple[IPAddress, ...]
    services: tuple[str, ...]  # the Services with a Portico address that select it
    passed: bool  # its condition is True
    version: int  # its resourceVersion (to tell our own write's echo from older news)


def _condition(pod: Any, kind: str) -> str | None:
    conditions = (pod.status.conditions or []) if pod.status is not None else []
    return next((c.status for c in conditions if c.type == kind), None)


def _addresses(pod: Any) -> tuple[IPAddress, ...]:
    out = []
    for entry in (pod.status.podIPs or []) if pod.status is not None else []:
        try:
            out.append(ipaddress.ip_address(entry.ip))
        except ValueError:
            continue
    return tuple(out)


def has_readiness_gate(pod: Any) -> bool:
    return (pod is not None and pod.spec is not None
            and any(g.conditionType == READINESS_GATE for g in pod.spec.readinessGates or []))


def _gated(pod: Any) -> bool:
    return (has_readiness_gate(pod) and pod.metadata.deletionTimestamp is None
            and _condition(pod, "ContainersReady") == "True")


def gated_pods(pods: Iterable[Any], services: Iterable[Any], served: Callable[[Any], bool]) -> list[GatedPod]:
    """The pods that carry Portico's gate and whose containers are ready (not being deleted, with an address),
    with the served Services whose selectors match them."""
    candidates = [(pod, addresses) for pod in pods if _gated(pod) and (addresses := _addresses(pod))]
    if not candidates:
        return []  # the common case: no Service on this node's pods asked for the gate
    selectors: dict[str, list[tuple[str, dict[str, str]]]] = {}  # namespace -> (Service key, selector)
    for svc in services:
        if svc.spec is not None and svc.spec.selector and served(svc):
            selectors.setdefault(svc.metadata.namespace, []).append(
                (f"{svc.metadata.namespace}/{svc.metadata.name}", svc.spec.selector))
    out = []
    for pod, addresses in candidates:
        meta = pod.metadata
        labels = meta.labels or {}
        matching = tuple(sorted(key for key, selector in selectors.get(meta.namespace, ())
                                if all(labels.get(k) == v for k, v in selector.items())))
        out.append(GatedPod(f"{meta.namespace}/{meta.name}", meta.uid or "", addresses, matching,
                            _condition(pod, READINESS_GATE) == "True", int(meta.resourceVersion or 0)))
    return out


def gated_view(pods: Iterable[GatedPod]) -> dict[str, frozenset[Endpoint]]:
    """What this node's heartbeats carry: each Service's gated endpoints (every port of the address)."""
    view: dict[str, set[Endpoint]] = {}
    for pod in pods:
        for service in pod.services:
            view.setdefault(service, set()).update((ip, ADDRESS) for ip in pod.addresses)
    return {service: frozenset(endpoints) for service, endpoints in view.items()}


def lists_all(slices: Iterable[Any], addresses: Iterable[IPAddress]) -> bool:
    """Whether the slices list every one of these addresses (in any condition): rules built from them can
    forward to it once it counts as ready."""
    wanted = {str(a) for a in addresses}
    for eps in slices:
        for ep in eps.endpoints or []:
            wanted -= set(ep.addresses)
    return not wanted


def condition(programmed_on: int, now: str) -> dict[str, str]:
    """The pod condition that lets the gate pass."""
    message = (f"in the rules of every Portico node ({programmed_on})" if programmed_on
               else "no Service with a Portico address selects this pod")
    return {"type": READINESS_GATE, "status": "True", "reason": "Programmed" if programmed_on else "NotSelected",
            "message": message, "lastTransitionTime": now}
