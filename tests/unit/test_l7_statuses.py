from __future__ import annotations

from portico.api.gateway import CONTROLLER_NAME, ObjectKey, ParentReference
from portico.l7.attachment import ParentResult
from portico.l7.listeners import HTTP_ROUTE, Cond, ListenerResult
from portico.l7.statuses import listener_statuses, route_parents
from portico.l7.translate import RouteStatus


def test_listener_status_shape_and_transition_times_kept() -> None:
    result = ListenerResult("http", (HTTP_ROUTE,), (Cond("Accepted", True, "Accepted"),
                                                    Cond("Programmed", True, "Programmed")))
    first = listener_statuses([], (result,), {"http": 2}, generation=3)
    assert first[0]["supportedKinds"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}]
    assert first[0]["attachedRoutes"] == 2
    assert {c["type"]: (c["status"], c["observedGeneration"]) for c in first[0]["conditions"]} == {
        "Accepted": ("True", 3), "Programmed": ("True", 3)}
    old = [{**first[0], "conditions": [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"}
                                       for c in first[0]["conditions"]]}]
    again = listener_statuses(old, (result,), {}, generation=4)
    assert {c["lastTransitionTime"] for c in again[0]["conditions"]} == {"2020-01-01T00:00:00Z"}
    assert again[0]["attachedRoutes"] == 0


def test_route_parents_are_ours_with_the_parent_ref_spelled_out() -> None:
    ref = ParentReference(name="gw", sectionName="http")
    status = RouteStatus((ParentResult(ref, ObjectKey("infra", "gw"), Cond("Accepted", True, "Accepted"), ("http",),
                                       {"http": ("",)}),), Cond("ResolvedRefs", False, "BackendNotFound", "x"))
    [parent] = route_parents([], status, "infra", generation=1)
    assert parent["controllerName"] == CONTROLLER_NAME
    assert parent["parentRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw",
                                   "namespace": "infra", "sectionName": "http"}
    assert [(c["type"], c["status"], c["reason"]) for c in parent["conditions"]] == [
        ("Accepted", "True", "Accepted"), ("ResolvedRefs", "False", "BackendNotFound")]
