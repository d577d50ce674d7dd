from __future__ import annotations

from typing import Any

import msgspec
import pytest

from portico.api.gateway import Listener, ObjectKey, ParentReference
from portico.l7.attachment import GatewayListeners, attach, intersect_hostnames
from portico.l7.listeners import judge_listeners

GW = ObjectKey("infra", "gw")
ROUTE = ObjectKey("infra", "r")
LABELS = {"infra": {"kubernetes.io/metadata.name": "infra"}, "apps": {"team": "a"}, "other": {}}


def gateway(*specs: dict[str, Any]) -> GatewayListeners:
    listeners = [msgspec.convert(s, Listener) for s in specs]
    return GatewayListeners(GW, tuple(listeners), tuple(judge_listeners(GW, listeners, {}, [])))


def parent(**kw: Any) -> ParentReference:
    return ParentReference(name="gw", namespace="infra", **kw)


HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}


@pytest.mark.parametrize(("listener", "route", "served"), [
    (None, [], ("",)),
    (None, ["a.example"], ("a.example",)),
    ("a.example", [], ("a.example",)),
    ("*.example", ["a.example", "b.other", "x.y.example"], ("a.example", "x.y.example")),
    ("*.example", ["example"], None),  # a wildcard matches names below it, not itself
    ("a.example", ["*.example"], ("a.example",)),  # the route's wider wildcard serves the listener's name
    ("*.example", ["*.example"], ("*.example",)),
    ("*.a.example", ["*.example"], ("*.a.example",)),
    ("a.example", ["b.example"], None),
])
def test_hostname_intersection(listener: str | None, route: list[str], served: tuple[str, ...] | None) -> None:
    assert intersect_hostnames(listener, route) == served


def test_route_attaches_to_every_matching_listener_with_its_hostnames() -> None:
    gw = gateway(HTTP, {"name": "admin", "port": 8080, "protocol": "HTTP", "hostname": "admin.example"})
    r = attach("HTTPRoute", ROUTE, parent(), ["admin.example"], gateway=gw, namespace_labels=LABELS)
    assert (r.accepted.status, r.listeners) == (True, ("http", "admin"))
    assert r.hostnames == {"http": ("admin.example",), "admin": ("admin.example",)}
    by_port = attach("HTTPRoute", ROUTE, parent(port=8080), [], gateway=gw, namespace_labels=LABELS)
    assert by_port.listeners == ("admin",)


def test_no_listener_with_that_section_or_port_is_no_matching_parent() -> None:
    gw = gateway(HTTP)
    for ref in (parent(sectionName="nope"), parent(port=81), parent(sectionName="http", port=81)):
        r = attach("HTTPRoute", ROUTE, ref, [], gateway=gw, namespace_labels=LABELS)
        assert (r.accepted.status, r.accepted.reason, r.listeners) == (False, "NoMatchingParent", ())


@pytest.mark.parametrize(("namespaces", "route_ns", "ok"), [
    ({}, "infra", True), ({}, "apps", False),  # Same, the default
    ({"from": "All"}, "other", True),
    ({"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}, "apps", True),
    ({"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}, "other", False),
    ({"from": "Selector", "selector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}}, "apps", True),
])
def test_allowed_namespaces(namespaces: dict[str, Any], route_ns: str, ok: bool) -> None:
    gw = gateway({**HTTP, "allowedRoutes": {"namespaces": namespaces}})
    r = attach("HTTPRoute", ObjectKey(route_ns, "r"), parent(), [], gateway=gw, namespace_labels=LABELS)
    assert (r.accepted.status, r.accepted.reason) == ((True, "Accepted") if ok else (False, "NotAllowedByListeners"))


def test_kinds_and_unaccepted_listeners_do_not_take_routes() -> None:
    gw = gateway(HTTP, {"name": "udp", "port": 53, "protocol": "UDP"})
    assert attach("GRPCRoute", ROUTE, parent(), [], gateway=gw, namespace_labels=LABELS).accepted.reason == \
        "NotAllowedByListeners"
    only_udp = attach("HTTPRoute", ROUTE, parent(sectionName="udp"), [], gateway=gw, namespace_labels=LABELS)
    assert only_udp.accepted.reason == "NotAllowedByListeners"


def test_hostnames_that_match_no_listener() -> None:
    gw = gateway({**HTTP, "hostname": "a.example"})
    r = attach("HTTPRoute", ROUTE, parent(), ["b.example"], gateway=gw, namespace_labels=LABELS)
    assert (r.accepted.status, r.accepted.reason) == (False, "NoMatchingListenerHostname")
