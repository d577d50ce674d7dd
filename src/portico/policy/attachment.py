"""Which TrafficPolicy governs which Service (pure), by the Gateway API's policy-attachment rules.

A policy names Services in its own namespace. When two name one Service, the older one (creation time, then
namespace/name) governs it and the other is Conflicted there — the same answer on the controller, which
writes it into the policies' status, and on every agent, which acts on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from portico.api import v1alpha1 as api
from portico.api.resources import decode


class Standing(StrEnum):
    """The policy's standing at one target: the reasons of Gateway API's Accepted policy condition."""

    ACCEPTED = "Accepted"
    CONFLICTED = "Conflicted"
    TARGET_NOT_FOUND = "TargetNotFound"
    INVALID = "Invalid"  # the target exists but Portico does not serve it


@dataclass(frozen=True)
class PolicyEntry:
    namespace: str
    name: str
    created: str  # RFC 3339 creation timestamp: compares as text
    targets: tuple[str, ...]  # Service names in the policy's namespace

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def age_order(self) -> tuple[str, str, str]:
        return self.created, self.namespace, self.name


def policy_from_object(obj: Any) -> tuple[PolicyEntry, api.TrafficPolicySpec]:
    """A TrafficPolicy object (as the informer holds it) as its entry and typed spec."""
    spec = decode(obj.spec, api.TrafficPolicySpec)
    meta = obj.metadata
    return PolicyEntry(meta.namespace, meta.name, str(meta.creationTimestamp or ""),
                       tuple(t.name for t in spec.targetRefs)), spec


def governing(policies: Iterable[PolicyEntry]) -> dict[str, PolicyEntry]:
    """Service key -> the policy that governs it."""
    winners: dict[str, PolicyEntry] = {}
    for policy in sorted(policies, key=lambda p: p.age_order):
        for target in policy.targets:
            winners.setdefault(f"{policy.namespace}/{target}", policy)
    return winners


@dataclass(frozen=True)
class TargetStanding:
    target: str  # the Service's name
    standing: Standing
    message: str


def standings(policy: PolicyEntry, winners: dict[str, PolicyEntry],
              served: Callable[[str], bool | None]) -> list[TargetStanding]:
    """The policy's standing at each of its targets. `served(service_key)`: None if there is no such Service,
    else whether Portico serves it (a LoadBalancer Service of its class, or an HTTP backend of its routes)."""
    out: list[TargetStanding] = []
    for target in policy.targets:
        key = f"{policy.namespace}/{target}"
        winner = winners.get(key)
        is_served = served(key)
        if winner is not None and winner.key != policy.key:
            out.append(TargetStanding(target, Standing.CONFLICTED, f"Service {target} is governed by the older "
                                      f"TrafficPolicy {winner.name}; this policy does not apply to it"))
        elif is_served is None:
            out.append(TargetStanding(target, Standing.TARGET_NOT_FOUND, f"no Service {target} in namespace "
                                      f"{policy.namespace}"))
        elif not is_served:
            out.append(TargetStanding(target, Standing.INVALID, f"Service {target} is neither a LoadBalancer "
                                      "Service that Portico serves nor a backend of a Portico Gateway's HTTPRoute "
                                      "or of a Portico Ingress"))
        else:
            out.append(TargetStanding(target, Standing.ACCEPTED, f"governs Service {target}"))
    return out
