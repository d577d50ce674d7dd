from __future__ import annotations

from typing import Any, cast

from lightkube.models.core_v1 import Pod

from portico.dev.kubelet.scheduling import NodeInfo, choose_node

NODES = [NodeInfo("node-1", {"zone": "a", "kubernetes.io/hostname": "node-1"}),
         NodeInfo("node-2", {"zone": "b", "kubernetes.io/hostname": "node-2"})]


def pod(name: str, node: str | None = None, owner: str | None = "rs-1", **spec: Any) -> Pod:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": name}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                    "uid": owner, "controller": True}]
    return cast(Pod, Pod.from_dict({"metadata": meta, "spec": {"containers": [{"name": "c", "image": "i"}],
                                                                **({"nodeName": node} if node else {}), **spec}}))


def test_spreads_replicas_of_one_owner() -> None:
    bound = [pod("a", "node-1"), pod("b", "node-2"), pod("c", "node-1")]
    assert choose_node(pod("d"), NODES, bound) == "node-2"


def test_prefers_spreading_siblings_over_total_load() -> None:
    bound = [pod("x", "node-2", owner="other"), pod("y", "node-2", owner="other"), pod("a", "node-1")]
    assert choose_node(pod("b"), NODES, bound) == "node-2"


def test_node_selector() -> None:
    assert choose_node(pod("p", nodeSelector={"zone": "b"}), NODES, []) == "node-2"
    assert choose_node(pod("p", nodeSelector={"zone": "c"}), NODES, []) is None


def test_daemonset_style_match_fields_affinity() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}]}]}}}
    assert choose_node(pod("p", affinity=affinity), NODES, [pod("q", "node-2", owner="o")]) == "node-2"


def test_match_expressions_operators() -> None:
    def with_expr(op: str, values: list[str] | None = None) -> Pod:
        expr: dict[str, Any] = {"key": "zone", "operator": op}
        if values is not None:
            expr["values"] = values
        return pod("p", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expr]}]}}})
    assert choose_node(with_expr("NotIn", ["a"]), NODES, []) == "node-2"
    assert choose_node(with_expr("Exists"), NODES, []) == "node-1"
    assert choose_node(with_expr("DoesNotExist"), NODES, []) is None
