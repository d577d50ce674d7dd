"""Choosing a node for a pod (pure): node selector, required node affinity, then spread.

The lab has no kube-scheduler; this covers what the lab's workloads use. Preferred affinity,
taints and resource fit are ignored (lab nodes are uniform and untainted).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightkube.models.core_v1 import NodeSelectorRequirement, NodeSelectorTerm, Pod


@dataclass(frozen=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str]


def _requirement_matches(req: NodeSelectorRequirement, value: str | None) -> bool:
    values = req.values or []
    match req.operator:
        case "In":
            return value is not None and value in values
        case "NotIn":
            return value is None or value not in values
        case "Exists":
            return value is not None
        case "DoesNotExist":
            return value is None
        case "Gt" | "Lt":
            try:
                number, bound = int(value or ""), int(values[0])
            except (ValueError, IndexError):
                return False
            return number > bound if req.operator == "Gt" else number < bound
    return False


def _term_matches(term: NodeSelectorTerm, node: NodeInfo) -> bool:
    fields = {"metadata.name": node.name}
    return all(_requirement_matches(r, node.labels.get(r.key)) for r in term.matchExpressions or []) and all(
        _requirement_matches(r, fields.get(r.key)) for r in term.matchFields or []
    )


def node_fits(pod: Pod, node: NodeInfo) -> bool:
    spec = pod.spec
    assert spec is not None
    if any(node.labels.get(k) != v for k, v in (spec.nodeSelector or {}).items()):
        return False
    affinity = spec.affinity.nodeAffinity if spec.affinity else None
    required = affinity.requiredDuringSchedulingIgnoredDuringExecution if affinity else None
    # Terms are ORed; an empty term list matches nothing, as in kube-scheduler.
    return required is None or any(_term_matches(t, node) for t in required.nodeSelectorTerms)


def _owner_uid(pod: Any) -> str | None:
    owners = pod.metadata.ownerReferences or []
    return next((o.uid for o in owners if o.controller), None)


def choose_node(pod: Pod, nodes: Sequence[NodeInfo], bound_pods: Sequence[Pod]) -> str | None:
    """The fitting node with the fewest pods of the same owner, then fewest pods; None if none fits."""
    owner = _owner_uid(pod)
    candidates = [n for n in nodes if node_fits(pod, n)]
    if not candidates:
        return None

    def load(node: NodeInfo) -> tuple[int, int, str]:
        on_node = [p for p in bound_pods if p.spec is not None and p.spec.nodeName == node.name]
        siblings = sum(1 for p in on_node if owner is not None and _owner_uid(p) == owner)
        return (siblings, len(on_node), node.name)

    return min(candidates, key=load).name
