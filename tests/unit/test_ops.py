"""`portico status` rows and `portico explain` steps from plain API objects (pure)."""

from __future__ import annotations

import json
from typing import Any

from portico.ops import render, status
from portico.ops.explain import BROKEN, OK, WARN, explain
from portico.ops.explain import render as render_explanation
from portico.ops.snapshot import Snapshot

Obj = dict[str, Any]
VIP = "198.18.0.240"


def service(name: str = "web", *, addresses: tuple[str, ...] = (VIP,), assigned: tuple[str, str, str] | None = (
        "True", "Assigned", f"assigned {VIP}"), announced: tuple[str, str, str] | None = (
        "True", "Layer2", f"{VIP} by node-1 (ARP/NDP)"), etp: str = "Cluster", **spec: Any) -> Obj:
    conditions = []
    if assigned:
        conditions.append(dict(zip(("status", "reason", "message"), assigned, strict=True),
                               type="portico.io/AddressAssigned"))
    if announced:
        conditions.append(dict(zip(("status", "reason", "message"), announced, strict=True),
                               type="portico.io/Announced"))
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/lb", "selector": {"app": name},
                     "externalTrafficPolicy": etp, **spec},
            "status": {"loadBalancer": {"ingress": [{"ip": a} for a in addresses]}, "conditions": conditions}}


def endpoint_slice(svc: str, *endpoints: tuple[str, str, bool]) -> Obj:
    return {"metadata": {"name": f"{svc}-1", "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
            "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "name": f"{svc}-{ip.rsplit('.', 1)[-1]}"}}
                          for ip, node, ready in endpoints]}


def allocation(svc: str, address: str = VIP, pool: str = "lan") -> Obj:
    return {"metadata": {"name": address.replace(".", "-")},
            "spec": {"address": address, "pool": pool, "services": [{"namespace": "default", "name": svc,
                                                                     "uid": f"uid-{svc}"}]}}


def node(name: str, **labels: str) -> Obj:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}}}


def agent_pod(node: str, ready: bool = True) -> Obj:
    return {"metadata": {"name": f"agent-{node}", "namespace": "portico-system"}, "spec": {"nodeName": node},
            "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def report(node: str, **status: Any) -> Obj:
    return {"metadata": {"name": node}, "status": {"heartbeat": {"address": "198.18.0.11", "port": 7946}, **status}}


def lab(*services: Obj, slices: tuple[Obj, ...] = (), reports: tuple[Obj, ...] | None = None,
        l2: tuple[Obj, ...] = ({"metadata": {"name": "lan"}, "spec": {"ipPools": ["lan"]}},), **more: Any) -> Snapshot:
    reports = reports if reports is not None else (report("node-1", layer2=[VIP]), report("node-2"))
    pool = {"metadata": {"name": "lan"}, "spec": {"addresses": ["198.18.0.240/30"]},
            "status": {"ipv4": {"total": 4, "used": 1, "available": 3},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}]}}
    defaults: dict[str, Any] = dict(
        services=list(services), endpoint_slices=list(slices), nodes=[node("node-1"), node("node-2")],
        agent_pods=[agent_pod("node-1"), agent_pod("node-2")], pools=[pool],
        allocations=[allocation(s["metadata"]["name"]) for s in services if s["status"]["loadBalancer"]["ingress"]],
        portico_nodes=list(reports), l2_advertisements=list(l2))
    return Snapshot(**{**defaults, **more})


READY3 = endpoint_slice("web", ("198.19.1.5", "node-1", True), ("198.19.2.5", "node-2", True),
                        ("198.19.2.6", "node-2", False))


def steps(snap: Snapshot, kind: str = "service", name: str = "web") -> dict[str, tuple[str, str]]:
    return {s.name: (s.verdict, s.says) for s in explain(snap, kind, "default", name).steps}


def test_a_serving_service_is_one_row_with_its_pool_mode_announcer_and_backends() -> None:
    rows = status.vips(lab(service(), slices=(READY3,)))
    assert [(r.name, r.addresses, r.pool, r.mode, r.announcers, r.healthy, r.ready, r.total, r.state)
            for r in rows] == [("web", [VIP], "lan", "L2", ["node-1"], None, 2, 3, "Serving")]
    text = render.output(rows, status.VipRow, "")
    assert text.splitlines()[1].split() == ["default", "web", "Service", VIP, "lan", "L2", "node-1", "-/2/3", "-",
                                            "Serving"]
    rated = status.vips(lab(service(), slices=(READY3,)), packets_per_second={"default/web": 12.4})
    assert rated[0].packets_per_second == 12.4
    assert render.output(rated, status.VipRow, "").splitlines()[1].split()[8] == "12"
    assert "PROBLEM" not in text and "PROBLEM" in render.output(rows, status.VipRow, "wide")
    assert json.loads(render.output(rows, status.VipRow, "json"))["items"][0]["ready"] == 2


def test_rows_say_why_a_vip_is_not_serving_and_filter_by_namespace_and_pool() -> None:
    exhausted = service("full", addresses=(), assigned=("False", "PoolExhausted", "no free address left in lan"),
                        announced=None)
    unannounced = service("quiet", announced=("False", "NoEligibleNode", "no node may announce"))
    snap = lab(service(), exhausted, unannounced, slices=(READY3,))
    by_name = {r.name: r for r in status.vips(snap)}
    assert (by_name["full"].state, by_name["full"].problem) == ("Pending",
                                                                "PoolExhausted: no free address left in lan")
    assert by_name["quiet"].state == "NotAnnounced" and "NoEligibleNode" in by_name["quiet"].problem
    assert by_name["web"].state == "Serving"
    assert status.vips(snap, namespace="other") == []
    assert [r.name for r in status.vips(snap, pool="lan")] == ["quiet", "web"]


def test_a_service_of_another_class_or_type_is_not_listed() -> None:
    other = service("other", loadBalancerClass="example.com/lb")
    cluster_ip = service("plain", type="ClusterIP")
    assert [r.name for r in status.vips(lab(service(), other, cluster_ip))] == ["web"]
    assert steps(lab(other), name="other")["class"][0] == BROKEN
    assert steps(lab(cluster_ip), name="plain")["class"] == (
        BROKEN, "spec.type is ClusterIP: Portico serves only Services of type LoadBalancer")


def test_explain_walks_every_step_of_a_healthy_service() -> None:
    healthy = endpoint_slice("web", ("198.19.1.5", "node-1", True), ("198.19.2.5", "node-2", True))
    explanation = explain(lab(service(), slices=(healthy,)), "service", "default", "web")
    assert [(s.name, s.verdict) for s in explanation.steps] == [
        ("class", OK), ("address", OK), ("announced", OK), ("rules", OK), ("endpoints", OK), ("health", OK)]
    announced = explanation.steps[2]
    assert announced.details == [f"{VIP}: node-1: answers ARP/NDP",
                                 f"{VIP}: node-2: standby: node-1 answers (one node per address in layer 2)"]
    assert explanation.broken is None and render_explanation(explanation).endswith("every step is in order")


def test_explain_stops_at_an_exhausted_pool_with_what_to_change() -> None:
    exhausted = service(addresses=(), assigned=("False", "PoolExhausted", "no free address left in lan"),
                        announced=None)
    explanation = explain(lab(exhausted), "service", "default", "web")
    broken = explanation.broken
    assert broken is not None and [s.name for s in explanation.steps] == ["class", "address"]
    assert broken.says == "no address: PoolExhausted: no free address left in lan"
    assert broken.details == ["IPPool lan: 198.18.0.240/30 (ipv4 1/4 used)"]
    assert "spec.addresses" in broken.fix
    assert "first broken step: address" in render_explanation(explanation)


def test_explain_a_requested_address_outside_every_pool() -> None:
    outside = service(addresses=(), assigned=("False", "RequestedIPNotInAnyPool", "198.18.200.1 is not in any "
                                              "IPPool"), announced=None)
    verdict, says = steps(lab(outside))["address"]
    assert verdict == BROKEN and says.endswith("198.18.200.1 is not in any IPPool")
    assert "inside an IPPool" in explain(lab(outside), "service", "default", "web").steps[-1].fix


def test_explain_a_service_with_no_ready_endpoint() -> None:
    none_ready = endpoint_slice("web", ("198.19.1.5", "node-1", False))
    assert steps(lab(service(), slices=(none_ready,)))["endpoints"] == (BROKEN, "0 of 1 endpoints ready")
    no_pods = steps(lab(service()))["endpoints"]
    assert no_pods == (BROKEN, "web has no endpoints: no pod matches app=web")


def test_explain_a_node_that_cannot_announce_names_the_missing_interface() -> None:
    broken_ad = {"metadata": {"name": "broken"}, "spec": {"ipPools": ["lan"], "interfaces": ["eth9"]}}
    problems = [{"advertisement": "broken", "message": "interface eth9 does not exist on node-1"}]
    snap = lab(service(announced=("False", "NoEligibleNode", "no node may announce")),
               reports=(report("node-1", l2Problems=problems), report("node-2", l2Problems=[
                   {"advertisement": "broken", "message": "interface eth9 does not exist on node-2"}])),
               l2=(broken_ad,))
    explanation = explain(snap, "service", "default", "web")
    announced = explanation.broken
    assert announced is not None and announced.name == "announced"
    assert announced.details == [f"{VIP}: node-1: interface eth9 does not exist on node-1",
                                 f"{VIP}: node-2: interface eth9 does not exist on node-2"]
    assert "spec.interfaces" in announced.fix


def test_why_other_nodes_are_not_eligible() -> None:
    local = service(etp="Local", announced=("False", "NoEligibleNode", "no node may announce"))
    slice_ = endpoint_slice("web", ("198.19.2.5", "node-2", True))
    snap = lab(local, slices=(slice_,), reports=(report("node-1"), report("node-2", unreachable=["node-1"]),
                                                 report("node-3")),
               nodes=[node("node-1"), node("node-2", **{"node.kubernetes.io/exclude-from-external-load-balancers":
                                                        ""}), node("node-3"), node("node-4")],
               agent_pods=[agent_pod("node-1"), agent_pod("node-2"), agent_pod("node-3", ready=False)])
    details = explain(snap, "service", "default", "web").steps[2].details
    assert details == [
        f"{VIP}: node-1: node-2 cannot hear its heartbeats (down, or cut off from its peers)",
        f"{VIP}: node-2: excluded from external load balancers (label "
        "node.kubernetes.io/exclude-from-external-load-balancers)",
        f"{VIP}: node-3: its agent is not ready: it is starting, or its last rule sync failed (its log says why)",
        f"{VIP}: node-4: no Portico agent runs here (its DaemonSet's pod is missing)"]
    quiet = lab(local, slices=(slice_,), reports=(report("node-1"), report("node-2")))
    assert explain(quiet, "service", "default", "web").steps[2].details[0] == (
        f"{VIP}: node-1: no ready local endpoint (externalTrafficPolicy Local)")


def test_explain_unhealthy_backends_from_every_nodes_monitor() -> None:
    healthy = endpoint_slice("web", ("198.19.1.5", "node-1", True), ("198.19.2.5", "node-2", True))
    policy = {"metadata": {"name": "web", "namespace": "default"},
              "spec": {"targetRefs": [{"kind": "Service", "name": "web"}], "healthCheck": {"type": "HTTP"}},
              "status": {"ancestors": [{"ancestorRef": {"kind": "Service", "name": "web"},
                                        "conditions": [{"type": "Accepted", "status": "True"}]}]}}
    event = {"metadata": {"name": "e1", "creationTimestamp": "2026-12-04T10:00:00Z"}, "type": "Warning",
             "reason": "BackendUnhealthy", "involvedObject": {"kind": "Service", "namespace": "default", "name": "web"},
             "message": "endpoint 198.19.2.5:8080 (pod web-5 on node-2) is down: HTTP check failed (503)"}

    def with_health(n1: int, n2: int) -> Snapshot:
        return lab(service(), slices=(healthy,), traffic_policies=[policy], events=[event], reports=(
            report("node-1", layer2=[VIP], health=[{"service": "default/web", "healthy": n1, "total": 1}]),
            report("node-2", health=[{"service": "default/web", "healthy": n2, "total": 1}])))
    one_down = explain(with_health(1, 0), "service", "default", "web")
    assert [(s.name, s.verdict) for s in one_down.steps][-1] == ("health", WARN)
    assert one_down.steps[-1].details == [event["message"]]
    assert one_down.events == [f"BackendUnhealthy: {event['message']}"]
    assert status.vips(with_health(1, 0))[0].state == "Degraded"
    all_down = explain(with_health(0, 0), "service", "default", "web")
    assert all_down.broken is not None and all_down.broken.says == (
        "0 of 2 endpoints pass their health check (TrafficPolicy web)")
    assert status.vips(with_health(0, 0))[0].state == "NoBackends"


def test_a_gateway_is_shown_and_explained_through_its_address_service() -> None:
    address = service("portico-gw-web")
    address["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "portico-gateway"}
    address["spec"].pop("selector")
    gateway = {"metadata": {"name": "web", "namespace": "default"}, "spec": {"gatewayClassName": "portico"},
               "status": {"conditions": [{"type": "Accepted", "status": "True", "message": "Accepted"},
                                         {"type": "Programmed", "status": "True", "message": f"served on {VIP}"}]}}
    gateway_class = {"metadata": {"name": "portico"}, "spec": {"controllerName": "portico.io/gateway-controller"},
                     "status": {"conditions": [{"type": "Accepted", "status": "True"}]}}
    route = {"metadata": {"name": "echo", "namespace": "default"},
             "spec": {"parentRefs": [{"name": "web"}], "rules": [{"backendRefs": [{"name": "echo", "port": 8080}]}]},
             "status": {"parents": [{"parentRef": {"name": "web"}, "conditions": [
                 {"type": "Accepted", "status": "True"}, {"type": "ResolvedRefs", "status": "True"}]}]}}
    echo = endpoint_slice("echo", ("198.19.1.7", "node-1", True))
    snap = lab(address, slices=(echo,), gateways=[gateway], gateway_classes=[gateway_class], http_routes=[route])
    rows = status.vips(snap, packets_per_second={"default/portico-gw-web": 3.0})
    assert [(r.kind, r.name, r.addresses, r.ready, r.total, r.state, r.packets_per_second) for r in rows] == [
        ("Gateway", "web", [VIP], 1, 1, "Serving", 3.0)]  # a Gateway's traffic is its address Service's
    assert [(name, verdict) for name, (verdict, _) in steps(snap, "gateway").items()] == [
        ("class", OK), ("accepted", OK), ("address service", OK), ("address", OK), ("announced", OK), ("rules", OK),
        ("programmed", OK), ("routes", OK), ("endpoints", OK), ("health", OK)]
    unattached = lab(address, gateways=[gateway], gateway_classes=[gateway_class])
    assert steps(unattached, "gateway")["endpoints"][0] == BROKEN
    assert steps(lab(gateways=[gateway]), "gateway")["class"] == (BROKEN, "GatewayClass portico does not exist")


def test_node_and_pool_rows() -> None:
    snap = lab(service(), reports=(report("node-1", layer2=[VIP], bgpSessions=[
        {"peer": "router", "state": "Established", "message": "1 routes advertised; BFD Up"}]),
        report("node-2", unreachable=["node-1"], forwardingProblems=[{"service": "default/web", "message": "x"}])))
    rows = {r.name: r for r in status.nodes(snap)}
    assert (rows["node-1"].agent, rows["node-1"].heartbeat, rows["node-1"].layer2, rows["node-1"].sessions,
            rows["node-1"].unheard_by) == ("Ready", "198.18.0.11:7946", 1, ["router Established"], ["node-2"])
    assert rows["node-2"].problems == ["default/web: x"] and rows["node-2"].unreachable == ["node-1"]
    assert [(p.name, p.ipv4, p.ipv6, p.ready) for p in status.pools(snap)] == [("lan", "1/4", "-", "Ready")]
    assert render.output(status.pools(snap), status.PoolRow, "").splitlines()[1].split() == [
        "lan", "198.18.0.240/30", "1/4", "-", "true", "Ready"]


def test_the_ingress_address_counts_the_ingresses_backends() -> None:
    address = service("portico-ingress")
    address["metadata"].update(namespace="portico-system", labels={"app.kubernetes.io/component": "ingress"})
    address["spec"].pop("selector")
    ingress_class = {"metadata": {"name": "portico"}, "spec": {"controller": "portico.io/ingress-controller"}}
    ingress: Obj = {"metadata": {"name": "echo", "namespace": "default", "creationTimestamp": "2026-12-04T10:00:00Z"},
               "spec": {"ingressClassName": "portico", "rules": [{"host": "a.example", "http": {"paths": [
                   {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "echo", "port": {
                       "number": 8080}}}}]}}]}}
    other = {**ingress, "metadata": {**ingress["metadata"], "name": "theirs"},
             "spec": {**ingress["spec"], "ingressClassName": "nginx"}}
    echo = endpoint_slice("echo", ("198.19.1.7", "node-1", True))
    snap = lab(address, slices=(echo,), ingresses=[ingress, other], ingress_classes=[ingress_class])
    rows = status.vips(snap)
    assert [(r.kind, r.name, r.ready, r.total, r.state) for r in rows] == [
        ("Ingress", "portico-ingress", 1, 1, "Serving")]
    unused = lab(address, ingresses=[other], ingress_classes=[ingress_class])
    assert [(r.state, r.problem) for r in status.vips(unused)] == [("Idle", "no route sends requests through it yet")]
    explanation = explain(unused, "service", "portico-system", "portico-ingress")
    assert explanation.broken is not None and explanation.broken.says == "no route sends requests to a Service yet"


def test_explain_a_forwarding_problem_and_an_unannounced_withdrawn_service() -> None:
    refused = service()
    refused["status"]["conditions"].append({"type": "portico.io/Forwarding", "status": "False",
                                            "reason": "ForwardingProblem",
                                            "message": "node-2: the kernel refused the rules for 198.18.0.240:80/tcp"})
    slices = (endpoint_slice("web", ("198.19.1.5", "node-1", True)),)
    assert steps(lab(refused, slices=slices))["rules"] == (
        BROKEN, "not programmed everywhere: node-2: the kernel refused the rules for 198.18.0.240:80/tcp")
    assert status.vips(lab(refused, slices=slices))[0].state == "Degraded"
    withdrawn = service(announced=("False", "NoHealthyBackend", f"{VIP} withdrawn from every node: none of its 1 "
                                   "endpoints is healthy (HTTP check)"))
    verdict, says = steps(lab(withdrawn, slices=slices))["announced"]
    assert verdict == BROKEN and says.startswith("NoHealthyBackend: ")
