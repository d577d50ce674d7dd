from __future__ import annotations

import ipaddress
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from lightkube.models.core_v1 import Service
from lightkube.models.discovery_v1 import EndpointSlice

from portico.agent.desired import Weights, gateway_frontends, pool_endpoints, service_frontends, weights
from portico.dataplane.l7model import Endpoint
from portico.dataplane.model import Algorithm, Backend, Frontend
from portico.policy.traffic import ENDPOINT_WEIGHTS, LB_ALGORITHM

ip = ipaddress.ip_address
VIP4, VIP6 = ip("198.18.100.1"), ip("fd00:198:18:f00::1")


def svc(annotations: dict[str, str] | None = None, **spec: Any) -> Service:
    spec.setdefault("ports", [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                              {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}])
    return cast(Service, Service.from_dict({"metadata": {"name": "web", "namespace": "shop",
                                                          "annotations": annotations or {}}, "spec": spec}))


def eps(*endpoints: dict[str, Any], ports: list[dict[str, Any]] | None = None, family: str = "IPv4") -> EndpointSlice:
    ports = ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"},
                                             {"name": "dns", "port": 5353, "protocol": "UDP"}]
    return cast(EndpointSlice, EndpointSlice.from_dict(
        {"metadata": {"name": "web-x", "namespace": "shop"}, "addressType": family, "ports": ports,
         "endpoints": list(endpoints)}))


def ep(address: str, node: str = "node-1", ready: bool | None = True, terminating: bool = False, *,
       pod: str | None = None, zone: str | None = None) -> dict[str, Any]:
    return {"addresses": [address], "nodeName": node, "zone": zone,
            "targetRef": {"kind": "Pod", "name": pod or f"web-{address}"},
            "conditions": {"ready": ready, "serving": ready, "terminating": terminating}}


def test_one_frontend_per_address_and_port_with_ports_resolved_by_name() -> None:
    out = service_frontends(svc(), [VIP4], [eps(ep("198.19.1.2"), ep("198.19.2.2", "node-2"))], "node-1")
    assert set(out.frontends) == {Frontend(VIP4, "tcp", 80), Frontend(VIP4, "udp", 53)}
    web = out.frontends[Frontend(VIP4, "tcp", 80)]
    assert web.backends == (Backend(ip("198.19.1.2"), 8080), Backend(ip("198.19.2.2"), 8080))
    assert out.frontends[Frontend(VIP4, "udp", 53)].backends[0].port == 5353
    assert web.service == "shop/web" and web.algorithm == Algorithm.RANDOM and out.problems == []


def test_only_ready_endpoints_take_new_flows() -> None:
    slices = [eps(ep("198.19.1.2"), ep("198.19.1.3", ready=False), ep("198.19.1.4", terminating=True),
                  ep("198.19.1.5", ready=None))]
    backends = service_frontends(svc(), [VIP4], slices, "node-1").frontends[Frontend(VIP4, "tcp", 80)].backends
    assert [str(b.ip) for b in backends] == ["198.19.1.2", "198.19.1.5"]  # unknown readiness counts as ready


def terminating(address: str, node: str = "node-1", serving: bool = True) -> dict[str, Any]:
    """As the EndpointSlice controller reports a pod being deleted: not ready, perhaps still serving."""
    return {**ep(address, node), "conditions": {"ready": False, "serving": serving, "terminating": True}}


def test_with_no_ready_endpoint_the_serving_terminating_ones_take_new_flows() -> None:
    def backends(*endpoints: dict[str, Any], **spec: Any) -> tuple[list[str], bool]:
        out = service_frontends(svc(**spec), [VIP4], [eps(*endpoints)], "node-1")
        policy = out.frontends[Frontend(VIP4, "tcp", 80)]
        return [str(b.ip) for b in policy.backends], policy.terminating
    assert backends(ep("198.19.1.2"), terminating("198.19.1.3")) == (["198.19.1.2"], False)  # a ready one: only it
    assert backends(terminating("198.19.1.3"), terminating("198.19.1.4", serving=False),
                    ep("198.19.1.5", ready=False)) == (["198.19.1.3"], True)  # none ready: those still serving
    # Under externalTrafficPolicy Local the fallback is per node: a ready endpoint elsewhere does not count.
    assert backends(ep("198.19.2.2", "node-2"), terminating("198.19.1.3"),
                    externalTrafficPolicy="Local") == (["198.19.1.3"], True)
    assert backends(terminating("198.19.1.4", serving=False)) == ([], False)


def test_local_policy_keeps_this_nodes_endpoints_only() -> None:
    slices = [eps(ep("198.19.1.2", "node-1"), ep("198.19.2.2", "node-2"))]
    out = service_frontends(svc(externalTrafficPolicy="Local"), [VIP4], slices, "node-2")
    assert [str(b.ip) for b in out.frontends[Frontend(VIP4, "tcp", 80)].backends] == ["198.19.2.2"]


def test_dual_stack_pairs_families() -> None:
    slices = [eps(ep("198.19.1.2")), eps(ep("fd00:198:18:101::2"), family="IPv6")]
    out = service_frontends(svc(), [VIP4, VIP6], slices, "node-1")
    assert [str(b.ip) for b in out.frontends[Frontend(VIP6, "tcp", 80)].backends] == ["fd00:198:18:101::2"]
    assert [str(b.ip) for b in out.frontends[Frontend(VIP4, "tcp", 80)].backends] == ["198.19.1.2"]


def test_duplicates_across_slices_count_once() -> None:
    out = service_frontends(svc(), [VIP4], [eps(ep("198.19.1.2"), ep("198.19.1.2")), eps(ep("198.19.1.2"))], "n")
    assert len(out.frontends[Frontend(VIP4, "tcp", 80)].backends) == 1


def test_bad_input_is_reported_and_the_rest_still_works() -> None:
    service = svc({LB_ALGORITHM: "fastest"}, loadBalancerSourceRanges=["10.0.0.0/8", "not-a-cidr"])
    slices = [eps(ep("198.19.1.2"), ports=[{"name": "dns", "port": 5353, "protocol": "UDP"}])]  # no "http"
    out = service_frontends(service, [VIP4], slices, "node-1")
    assert out.frontends[Frontend(VIP4, "tcp", 80)].backends == ()  # refused, not black-holed
    assert len(out.frontends[Frontend(VIP4, "udp", 53)].backends) == 1
    assert out.frontends[Frontend(VIP4, "udp", 53)].source_ranges == (ipaddress.ip_network("10.0.0.0/8"),)
    assert out.frontends[Frontend(VIP4, "udp", 53)].algorithm == Algorithm.RANDOM
    assert any("fastest" in p for p in out.problems)
    assert any("not-a-cidr" in p for p in out.problems)
    assert any(p.startswith("port http") for p in out.problems)


def test_algorithm_affinity_and_open_source_ranges() -> None:
    service = svc({LB_ALGORITHM: "maglev"}, sessionAffinity="ClientIP", loadBalancerSourceRanges=["0.0.0.0/0"])
    policy = service_frontends(service, [VIP4], [eps(ep("198.19.1.2"))], "node-1").frontends[
        Frontend(VIP4, "tcp", 80)]
    assert policy.algorithm == Algorithm.MAGLEV
    assert policy.affinity_timeout == 10800
    assert policy.source_ranges == ()  # everyone allowed: no filter at all


def test_endpoint_weights_by_pod_prefix_then_node_then_zone_in_lowest_terms() -> None:
    slices = [eps(ep("198.19.1.2", pod="web-canary-1"), ep("198.19.1.3", pod="web-cana-2"),
                  ep("198.19.2.2", "node-2", pod="web-2"), ep("198.19.3.2", "node-3", pod="web-3", zone="b"),
                  ep("198.19.4.2", "node-4", pod="web-4", zone="c"), ep("198.19.5.2", "node-5", pod="web-5"))]
    spec = "pod:web-canary-=2, pod:web-cana=4, node:node-2=6, zone:b=8, zone:c=0, default=10"
    out = service_frontends(svc({ENDPOINT_WEIGHTS: spec}), [VIP4], slices, "node-1")
    backends = out.frontends[Frontend(VIP4, "tcp", 80)].backends
    assert {str(b.ip): b.weight for b in backends} == {  # halved; zone c drained
        "198.19.1.2": 1, "198.19.1.3": 2, "198.19.2.2": 3, "198.19.3.2": 4, "198.19.5.2": 5}
    assert out.problems == []


def test_bad_endpoint_weights_are_reported_and_ignored() -> None:
    for bad in ("pod:web=x", "node:=3", "rack:r1=2", "default=101", "node:a=1,,"):
        out = service_frontends(svc({ENDPOINT_WEIGHTS: bad}), [VIP4], [eps(ep("198.19.1.2"))], "node-1")
        assert [b.weight for b in out.frontends[Frontend(VIP4, "tcp", 80)].backends] == [1]
        assert out.problems and ENDPOINT_WEIGHTS in out.problems[0], bad


@given(st.text(alphabet="podenz:=,-0123456789 x", max_size=60) | st.text(max_size=30))
def test_the_weights_parser_never_raises_and_is_all_or_nothing(text: str) -> None:
    problems: list[str] = []
    parsed = weights(text, problems)
    assert all(0 <= w <= 100 for _, _, w in parsed.rules) and 0 <= parsed.default <= 100
    if problems:
        assert parsed == Weights() and len(problems) == 1


def policy(**fields: Any) -> Any:
    import msgspec

    from portico.api.v1alpha1 import TrafficPolicySpec
    return msgspec.convert({"targetRefs": [{"kind": "Service", "name": "web"}], **fields}, TrafficPolicySpec)


def test_a_policy_replaces_the_annotations_and_session_affinity() -> None:
    service = svc({LB_ALGORITHM: "random", ENDPOINT_WEIGHTS: "default=5"}, sessionAffinity="ClientIP")
    slices = [eps(ep("198.19.1.2", pod="web-canary-1"), ep("198.19.1.3"))]
    governed = policy(loadBalancing={"algorithm": "maglev", "hashKey": "FiveTuple",
                                     "weights": [{"kind": "Pod", "name": "web-canary-", "weight": 3}]},
                      persistence={"timeout": "90s", "ipv4PrefixLength": 24, "ipv6PrefixLength": 128})
    out = service_frontends(service, [VIP4, VIP6], slices, "node-1", governed)
    web = out.frontends[Frontend(VIP4, "tcp", 80)]
    assert web.algorithm == Algorithm.MAGLEV_5TUPLE and web.affinity_timeout == 90 and web.affinity_prefix == 24
    assert [b.weight for b in web.backends] == [3, 1]  # the policy's weights, not the annotation's default=5
    assert out.problems == []
    unpinned = service_frontends(svc(), [VIP4], slices, "node-1", policy(loadBalancing={"algorithm": "round-robin"}))
    rr = unpinned.frontends[Frontend(VIP4, "tcp", 80)]
    assert rr.algorithm == Algorithm.ROUND_ROBIN and rr.affinity_timeout is None and rr.affinity_prefix is None
    # a policy without loadBalancing leaves the annotations in force
    kept = service_frontends(service, [VIP4], slices, "node-1", policy(persistence={}))
    assert kept.frontends[Frontend(VIP4, "tcp", 80)].backends[0].weight == 1  # default=5 in lowest terms
    assert kept.frontends[Frontend(VIP4, "tcp", 80)].affinity_timeout == 10800


def test_layer_7_only_sections_are_ignored_at_layer_4_and_said_so() -> None:
    slices = [eps(ep("198.19.1.2"), ep("198.19.1.3"))]
    governed = policy(loadBalancing={"algorithm": "least-connections"},
                      persistence={"type": "Cookie", "sessionName": "shop"})
    out = service_frontends(svc(), [VIP4], slices, "node-1", governed)
    web = out.frontends[Frontend(VIP4, "tcp", 80)]
    assert web.algorithm == Algorithm.RANDOM and web.affinity_timeout is None
    assert len(out.problems) == 2 and all("HTTP backends" in p for p in out.problems), out.problems


def test_down_endpoints_take_no_new_flows_and_withdraw_when_none_is_left() -> None:
    slices = [eps(ep("198.19.1.2"), ep("198.19.1.3"), ep("198.19.1.4"))]
    checked = policy(healthCheck={"type": "HTTP", "whenNoneHealthy": "Withdraw"})
    down = frozenset({(ip("198.19.1.2"), 8080), (ip("198.19.1.3"), 0)})  # one port's result; a whole address
    out = service_frontends(svc(), [VIP4], slices, "node-1", checked, down={"node-1": down})
    web, dns = out.frontends[Frontend(VIP4, "tcp", 80)], out.frontends[Frontend(VIP4, "udp", 53)]
    assert [str(b.ip) for b in web.backends] == ["198.19.1.4"] and not web.withdraw
    assert [str(b.ip) for b in dns.backends] == ["198.19.1.2", "198.19.1.4"]  # 1.2 is down on 8080 only
    everyone = frozenset({(ip(a), 0) for a in ("198.19.1.2", "198.19.1.3", "198.19.1.4")})
    out = service_frontends(svc(), [VIP4], slices, "node-1", checked, down={"node-1": everyone})
    assert all(p.backends == () and p.withdraw for p in out.frontends.values())
    # an HTTP check covers the TCP port only: its endpoints all down withdraws the VIP, UDP port and all
    tcp_down = frozenset({(ip(a), 8080) for a in ("198.19.1.2", "198.19.1.3", "198.19.1.4")})
    out = service_frontends(svc(), [VIP4], slices, "node-1", checked, down={"node-1": tcp_down})
    assert out.frontends[Frontend(VIP4, "udp", 53)].backends and out.frontends[Frontend(VIP4, "udp", 53)].withdraw
    refuse = service_frontends(svc(), [VIP4], slices, "node-1", policy(healthCheck={"type": "TCP"}),
                              down={"node-1": everyone})
    assert all(p.backends == () and not p.withdraw for p in refuse.frontends.values())


def test_a_dead_nodes_endpoints_take_no_new_flows_unless_nothing_else_is_ready() -> None:
    slices = [eps(ep("198.19.1.2"), ep("198.19.2.2", "node-2"), ep("198.19.3.2", "node-3"))]
    out = service_frontends(svc(), [VIP4], slices, "node-1", dead_nodes=frozenset({"node-2", "node-3"}))
    assert [str(b.ip) for b in out.frontends[Frontend(VIP4, "tcp", 80)].backends] == ["198.19.1.2"]
    # this node's own endpoints are never out for this reason, even when its peers think it is dead
    mine = service_frontends(svc(), [VIP4], slices, "node-2", dead_nodes=frozenset({"node-2"}))
    assert len(mine.frontends[Frontend(VIP4, "tcp", 80)].backends) == 3
    # every ready endpoint on dead nodes: they stay (a wrong belief must not empty the Service)
    stranded = service_frontends(svc(), [VIP4], [eps(ep("198.19.2.2", "node-2"))], "node-1",
                                 dead_nodes=frozenset({"node-2"}))
    web = stranded.frontends[Frontend(VIP4, "tcp", 80)]
    assert [str(b.ip) for b in web.backends] == ["198.19.2.2"] and not web.terminating


def test_gated_endpoints_are_taken_as_ready_unless_terminating_or_down() -> None:
    """A pod whose Portico readiness gate waits for the rules is listed not ready: the rules forward to it anyway."""
    slices = [eps(ep("198.19.1.2"), ep("198.19.1.3", ready=False), ep("198.19.1.4", ready=False),
                  terminating("198.19.1.5"))]
    gated = frozenset({(ip(a), 0) for a in ("198.19.1.3", "198.19.1.5", "198.19.1.9")})  # 1.9: in no slice
    out = service_frontends(svc(), [VIP4], slices, "node-1", gated={"node-1": gated})
    assert [str(b.ip) for b in out.frontends[Frontend(VIP4, "tcp", 80)].backends] == ["198.19.1.2", "198.19.1.3"]
    down = frozenset({(ip("198.19.1.3"), 8080)})
    out = service_frontends(svc(), [VIP4], slices, "node-1", gated={"node-1": gated}, down={"node-1": down})
    assert [str(b.ip) for b in out.frontends[Frontend(VIP4, "tcp", 80)].backends] == ["198.19.1.2"]



def test_a_node_is_believed_only_about_its_own_endpoints() -> None:
    """Health and gate results are by node: a node's word about another node's endpoint changes nothing."""
    slices = [eps(ep("198.19.1.2"), ep("198.19.2.2", "node-2", ready=False), ep("198.19.2.3", "node-2"))]
    claims = {"node-1": frozenset({(ip("198.19.2.2"), 0), (ip("198.19.2.3"), 0)})}  # about node-2's pods
    out = service_frontends(svc(), [VIP4], slices, "node-1", down=claims, gated=claims)
    assert [str(b.ip) for b in out.frontends[Frontend(VIP4, "tcp", 80)].backends] == ["198.19.1.2", "198.19.2.3"]


def test_a_gateways_service_is_delivered_locally_on_each_tcp_port() -> None:
    built = gateway_frontends(svc(), [VIP4, VIP6])
    assert set(built.frontends) == {Frontend(VIP4, "tcp", 80), Frontend(VIP6, "tcp", 80)}
    assert all(p.deliver_local and p.backends == () for p in built.frontends.values())


def test_pool_endpoints_are_the_ready_ones_of_both_families_by_service_port() -> None:
    slices = [eps(ep("198.19.0.1"), ep("198.19.0.2", ready=False), ep("198.19.0.3", terminating=True, ready=False)),
              eps(ep("fd00:198:19::1"), family="IPv6")]
    pools = pool_endpoints(svc(), slices, "node-1")
    assert pools == {80: (Endpoint(ip("198.19.0.1"), 8080), Endpoint(ip("fd00:198:19::1"), 8080))}  # no UDP port
