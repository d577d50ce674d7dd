from __future__ import annotations

import ipaddress

from portico.api.gateway import CONTROLLER_NAME, GatewayClassSpec, ObjectKey, ParametersReference, ParentReference
from portico.l7.attachment import ParentResult
from portico.l7.features import SUPPORTED_FEATURES
from portico.l7.gateway_service import UnsupportedAddress
from portico.l7.listeners import HTTP_ROUTE, Cond, ListenerResult
from portico.l7.statuses import class_status, gateway_conditions, gateway_status, listener_statuses, route_parents
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


def _listener(programmed: bool) -> ListenerResult:
    return ListenerResult("http", (HTTP_ROUTE,), (
        Cond("Accepted", programmed, "Accepted" if programmed else "UnsupportedProtocol"),
        Cond("ResolvedRefs", True, "ResolvedRefs"), Cond("Programmed", programmed, "Programmed")))


def test_a_gateway_is_programmed_once_it_holds_an_address_and_serves_a_listener() -> None:
    address = (ipaddress.ip_address("198.18.100.5"),)
    accepted, programmed = gateway_conditions((_listener(True),), None, address, "")
    assert (accepted.status, programmed.status, programmed.reason) == (True, True, "Programmed")
    assert "198.18.100.5" in programmed.message
    _, waiting = gateway_conditions((_listener(True),), None, (), "PoolExhausted: no free address left in lab")
    assert (waiting.status, waiting.reason, waiting.message) == (
        False, "AddressNotAssigned", "PoolExhausted: no free address left in lab")
    accepted, programmed = gateway_conditions((_listener(False),), None, address, "")
    assert (accepted.status, accepted.reason, programmed.status, programmed.reason) == (
        False, "ListenersNotValid", False, "Invalid")


def test_an_unsupported_address_is_not_accepted_naming_the_field() -> None:
    accepted, programmed = gateway_conditions((_listener(True),), UnsupportedAddress("spec.addresses[0]: no"),
                                              (), "")
    assert (accepted.status, accepted.reason, accepted.message) == (False, "UnsupportedAddress",
                                                                    "spec.addresses[0]: no")
    assert not programmed.status


def test_gateway_status_lists_addresses_conditions_and_listeners() -> None:
    conds = gateway_conditions((_listener(True),), None, (ipaddress.ip_address("198.18.100.5"),), "")
    status = gateway_status({}, 2, conds, results=(_listener(True),), attached={"http": 1},
                            addresses=(ipaddress.ip_address("198.18.100.5"),))
    assert status["addresses"] == [{"type": "IPAddress", "value": "198.18.100.5"}]
    assert [(c["type"], c["observedGeneration"]) for c in status["conditions"]] == [("Accepted", 2),
                                                                                   ("Programmed", 2)]
    assert status["listeners"][0]["attachedRoutes"] == 1


def test_our_gateway_class_is_accepted_with_its_features_unless_it_names_parameters() -> None:
    status = class_status({}, GatewayClassSpec(controllerName=CONTROLLER_NAME), 1)
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [("Accepted", "True")]
    assert {f["name"] for f in status["supportedFeatures"]} == set(SUPPORTED_FEATURES)
    with_params = GatewayClassSpec(controllerName=CONTROLLER_NAME,
                                   parametersRef=ParametersReference(group="x", kind="Config", name="c"))
    [cond] = class_status(status, with_params, 2)["conditions"]
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("False", "InvalidParameters", 2)
