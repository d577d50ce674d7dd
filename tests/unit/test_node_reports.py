"""Nodes' reports -> what users read (pure)."""

from __future__ import annotations

import ipaddress

from portico.api.v1alpha1 import AdvertisementProblem, PorticoNodeStatus, ServiceProblem, SessionReport
from portico.controller.node_reports import (
    NodeReport,
    Views,
    advertisement_problems,
    announced_condition,
    announcement_views,
    down_nodes,
    forwarding_problems,
    peer_sessions,
)

V4, V6 = ipaddress.ip_address("198.18.0.240"), ipaddress.ip_address("fd00:198:18::ff0")


def report(name: str, received: int, **status: object) -> NodeReport:
    return NodeReport(name, PorticoNodeStatus(**status), received)  # type: ignore[arg-type]


def test_the_announced_condition_names_each_vip_and_node_or_what_is_missing() -> None:
    assert announced_condition([V6, V4], Views(layer2={V4: ["node-1"], V6: ["node-2"]})) == (
        True, "Layer2", "198.18.0.240 by node-1 (ARP/NDP); fd00:198:18::ff0 by node-2 (ARP/NDP)")
    status, reason, message = announced_condition([V4, V6], Views(layer2={V4: ["node-1"]}))
    assert (status, reason) == (False, "NoEligibleNode") and message.startswith("no node may announce fd00:198:18::ff0")
    assert announced_condition([V4, V6], Views(layer2={V4: ["node-1"]}, bgp={V6: ["node-1", "node-2"]})) == (
        True, "Layer2AndBGP", "198.18.0.240 by node-1 (ARP/NDP); fd00:198:18::ff0 by node-1, node-2 (BGP)")
    assert announced_condition([V4], Views(bgp={V4: ["node-2"]}))[:2] == (True, "BGP")


def test_a_node_reported_unreachable_after_its_last_report_is_down_and_its_claims_left_out() -> None:
    dead = report("node-1", 1, layer2=[str(V4)], bgp=[str(V6)])
    survivor = report("node-2", 2, layer2=[str(V4)], bgp=[str(V6)], unreachable=["node-1"])
    assert down_nodes([dead, survivor]) == {"node-1"}
    views = announcement_views([dead, survivor])
    assert views.layer2 == {V4: ["node-2"]} and views.bgp == {V6: ["node-2"]}
    back = report("node-1", 3, layer2=[], bgp=[str(V6)])  # it came back and reported after the survivor
    assert down_nodes([back, survivor]) == set()
    assert announcement_views([back, survivor]).bgp == {V6: ["node-1", "node-2"]}
    # Only peers' word counts: a node cannot declare itself down, nor can an unknown name matter.
    assert down_nodes([report("node-3", 5, unreachable=["node-3", "node-9"])]) == set()


def test_problems_and_sessions_are_gathered_per_node() -> None:
    reports = [report("node-2", 1, forwardingProblems=[ServiceProblem("a/web", "no IPv6 address")],
                      bgpSessions=[SessionReport("router", "Established", "1 route advertised")],
                      l2Problems=[AdvertisementProblem("lab", "interface eth9 does not exist on node-2")]),
               report("node-1", 2, forwardingProblems=[ServiceProblem("a/web", "refused")],
                      bgpSessions=[SessionReport("router", "Active", "not established")])]
    assert forwarding_problems(reports) == {"a/web": ["node-1: refused", "node-2: no IPv6 address"]}
    assert peer_sessions(reports) == {"router": [
        {"node": "node-1", "state": "Active", "message": "not established"},
        {"node": "node-2", "state": "Established", "message": "1 route advertised"}]}
    assert advertisement_problems(reports) == {"lab": [
        {"node": "node-2", "message": "interface eth9 does not exist on node-2"}]}


def test_a_withdrawn_service_says_why_it_is_not_announced() -> None:
    reason = "none of its 3 endpoints is healthy (TCP check) and TrafficPolicy p says whenNoneHealthy: Withdraw"
    assert announced_condition([V4], Views(), reason) == (False, "NoHealthyBackend",
                                                          f"{V4} withdrawn from every node: {reason}")
    assert announced_condition([V4], Views(layer2={V4: ["node-1"]}), reason)[0] is True  # announced after all
