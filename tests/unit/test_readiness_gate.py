"""Portico's pod readiness gate: which pods wait (pure), and when the agent lets one pass."""

from __future__ import annotations

import ipaddress
import time
from types import SimpleNamespace
from typing import Any, cast

from lightkube.models.discovery_v1 import EndpointSlice
from lightkube.resources.core_v1 import Pod, Service

from portico.agent.readiness import ReadinessGates
from portico.announce.heartbeat import HeartbeatMesh, Peer
from portico.policy.readiness import READINESS_GATE, condition, gated_pods, gated_view, lists_all

ip = ipaddress.ip_address


def pod(name: str, *, labels: dict[str, str] | None = None, gate: bool = True, containers_ready: bool = True,
        passed: bool = False, deleting: bool = False, ips: tuple[str, ...] = ("198.19.1.2", "fd00:198:19:1::2"),
        namespace: str = "shop") -> Pod:
    conditions = [{"type": "ContainersReady", "status": "True" if containers_ready else "False"}]
    if passed:
        conditions.append({"type": READINESS_GATE, "status": "True"})
    return cast(Pod, Pod.from_dict({
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "7",
                     "labels": labels if labels is not None else {"app": "web"},
                     **({"deletionTimestamp": "2026-12-01T00:00:00Z"} if deleting else {})},
        "spec": {"containers": [{"name": "c"}], **({"readinessGates": [{"conditionType": READINESS_GATE}]}
                                                   if gate else {})},
        "status": {"conditions": conditions, "podIPs": [{"ip": a} for a in ips]}}))


def service(name: str, selector: dict[str, str], namespace: str = "shop") -> Service:
    return cast(Service, Service.from_dict({"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
                                            "spec": {"selector": selector, "ipFamilies": ["IPv4"]}}))


def slice_of(*addresses: str) -> EndpointSlice:
    return cast(EndpointSlice, EndpointSlice.from_dict({
        "metadata": {"name": "web-x", "namespace": "shop"}, "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": False}} for a in addresses]}))


def test_a_gated_pod_is_one_with_the_gate_and_ready_containers_selected_by_a_served_service() -> None:
    pods = [pod("web-1"), pod("web-2", gate=False), pod("web-3", containers_ready=False), pod("web-4", deleting=True),
            pod("web-5", ips=()), pod("web-6", passed=True), pod("api-1", labels={"app": "api"}),
            pod("other-1", namespace="other")]
    services = [service("web", {"app": "web"}), service("web-canary", {"app": "web", "track": "canary"}),
                service("unserved", {"app": "web"}), service("web", {"app": "web"}, namespace="other")]
    found = {p.key: p for p in gated_pods(pods, services, lambda svc: svc.metadata.name != "unserved")}
    assert set(found) == {"shop/web-1", "shop/web-6", "shop/api-1", "other/other-1"}
    assert found["shop/web-1"].services == ("shop/web",) and not found["shop/web-1"].passed
    assert found["shop/web-6"].passed and found["shop/api-1"].services == ()  # no served Service selects it
    assert found["other/other-1"].services == ("other/web",)
    assert found["shop/web-1"].addresses == (ip("198.19.1.2"), ip("fd00:198:19:1::2"))
    assert gated_view(found.values()) == {
        "shop/web": frozenset({(ip("198.19.1.2"), 0), (ip("fd00:198:19:1::2"), 0)}),
        "other/web": frozenset({(ip("198.19.1.2"), 0), (ip("fd00:198:19:1::2"), 0)})}
    assert gated_pods([pod("web-2", gate=False)], services, lambda svc: True) == []


def test_slices_list_a_pod_in_any_condition() -> None:
    assert lists_all([slice_of("198.19.1.2"), slice_of("198.19.1.3")], [ip("198.19.1.2"), ip("198.19.1.3")])
    assert not lists_all([slice_of("198.19.1.2")], [ip("198.19.1.2"), ip("198.19.1.3")])
    assert condition(3, "now")["message"] == "in the rules of every Portico node (3)"
    assert condition(0, "now")["reason"] == "NotSelected"


def gates(pods: list[Pod], slices: list[EndpointSlice]) -> tuple[ReadinessGates, HeartbeatMesh]:
    web = service("web", {"app": "web"})
    caches = SimpleNamespace(pods=SimpleNamespace(cache=dict(enumerate(pods))),
                             services=SimpleNamespace(cache={"shop/web": web}),
                             vips_of={"uid-web": {ip("198.18.100.1")}},
                             slices_for=lambda key: slices if key == "shop/web" else [])
    mesh = HeartbeatMesh("node-1", lambda peer, what: None)
    mesh.keys, mesh.started = (b"k" * 32,), time.monotonic() - 1  # settled: every live peer has been heard
    mesh.peers["node-2"] = Peer(ip("198.18.0.12"), heard=time.monotonic())
    mesh.peers["node-3"] = Peer(ip("198.18.0.13"))  # not alive: it does not hold the gate
    return ReadinessGates(cast(Any, None), cast(Any, caches), mesh), mesh


def test_a_pod_passes_once_this_nodes_rules_and_every_live_peers_reflect_it() -> None:
    gate, mesh = gates([pod("web-1"), pod("api-1", labels={"app": "api"})], [])
    assert gate.update() == {"shop/web"} and mesh.gated["shop/web"]
    entered = mesh.health
    # nothing selects api-1: it passes at once; web-1's slice does not list it yet, so no sync has programmed it
    gate.synced(gate.before_sync())
    assert [(p.key, n) for p, n in gate.passing()] == [("shop/api-1", 0)]
    # listed and programmed here, but node-2 has not acknowledged the view that holds it
    gate.caches.slices_for = lambda key: [slice_of("198.19.1.2")]  # type: ignore[method-assign]
    gate.synced(gate.before_sync())
    assert [p.key for p, _ in gate.passing()] == ["shop/api-1"]
    mesh.peers["node-2"].acked = entered
    assert sorted((p.key, n) for p, n in gate.passing()) == [("shop/api-1", 0), ("shop/web-1", 2)]
    # not before this node has listened long enough to hear every live peer
    mesh.started = time.monotonic()
    assert gate.passing() == []


def test_a_peers_view_is_acknowledged_only_once_the_rules_can_forward_to_its_gated_pods() -> None:
    gate, mesh = gates([], [slice_of("198.19.2.7")])
    mesh.peers["node-2"].gated = {"shop/web": frozenset({(ip("198.19.2.7"), 0), (ip("fd00:198:19:2::7"), 0)})}
    mesh.peers["node-2"].health = 4
    assert gate.reflected(mesh.held())["node-2"].health == 4  # IPv6 is not the Service's family: not needed
    mesh.peers["node-2"].gated = {"shop/web": frozenset({(ip("198.19.2.8"), 0)})}  # its slice has not come yet
    assert gate.reflected(mesh.held()) == {}
    mesh.peers["node-2"].gated = {"shop/unknown": frozenset({(ip("198.19.2.7"), 0)})}  # no address here (yet)
    assert gate.reflected(mesh.held()) == {}
