from __future__ import annotations

import ipaddress
from typing import Any

import msgspec

from portico.api.gateway import GatewaySpec, ObjectKey, RouteSpec
from portico.dataplane.haproxy import render
from portico.dataplane.l7model import Endpoint
from portico.l7.translate import GatewayInput, RouteInput, World, translate

VIP = ipaddress.ip_address("198.18.100.10")
GW = ObjectKey("infra", "gw")
CERT = ObjectKey("infra", "cert")


def gateway(listeners: list[dict[str, Any]]) -> GatewayInput:
    return GatewayInput(GW, msgspec.convert({"gatewayClassName": "portico", "listeners": listeners}, GatewaySpec),
                        (VIP,))


def route(ns: str, name: str, spec: dict[str, Any], created: str = "2026-01-01T00:00:00Z") -> RouteInput:
    return RouteInput(ObjectKey(ns, name), created, msgspec.convert(spec, RouteSpec))


WORLD = World(
    services={ObjectKey("infra", "web"): {8080}, ObjectKey("infra", "api"): {80}},
    endpoints={(ObjectKey("infra", "web"), 8080): (Endpoint(ipaddress.ip_address("198.18.2.5"), 3000),),
               (ObjectKey("infra", "api"), 80): (Endpoint(ipaddress.ip_address("198.18.3.7"), 3000),)},
    secrets={CERT: None},
)
LISTENERS = [{"name": "http", "port": 80, "protocol": "HTTP"},
             {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "secure.example",
              "tls": {"certificateRefs": [{"name": "cert"}]}}]
PARENT = [{"name": "gw"}]


def test_routes_become_listeners_pools_and_statuses() -> None:
    web = route("infra", "web", {"parentRefs": PARENT, "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]})
    api = route("infra", "api", {"parentRefs": [{"name": "gw", "sectionName": "http"}], "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
         "backendRefs": [{"name": "api", "port": 80, "weight": 3}, {"name": "gone", "port": 80}]}]},
        created="2026-06-01T00:00:00Z")
    foreign = route("apps", "x", {"parentRefs": [{"name": "gw", "namespace": "infra"}]})
    other = route("infra", "o", {"parentRefs": [{"name": "not-ours"}]})
    t = translate([gateway(LISTENERS)], [web, api, foreign, other], WORLD, {CERT: "/run/certs/infra_cert.pem"})

    assert t.attached_routes == {(GW, "http"): 2, (GW, "https"): 1}
    assert ObjectKey("infra", "o") not in t.routes  # a parent that is not Portico's gets no status from us
    assert t.routes[ObjectKey("apps", "x")].parents[0].accepted.reason == "NotAllowedByListeners"
    assert t.routes[ObjectKey("infra", "api")].resolved_refs.reason == "BackendNotFound"
    assert t.routes[ObjectKey("infra", "web")].resolved_refs.status is True

    by_port = {lst.port: lst for lst in t.config.listeners}
    assert set(by_port) == {80, 443} and by_port[443].certificates == ("/run/certs/infra_cert.pem",)
    # On :80 the /api prefix is tried before the newer-or-not catch-all `/` (a longer prefix wins).
    assert [e.match.path.value for e in by_port[80].entries] == ["/api", "/"]
    assert [(b.pool, b.weight) for b in by_port[80].entries[0].backends] == [("infra_api_80", 3), (None, 1)]
    assert by_port[443].entries[0].hostnames == ("secure.example",)
    assert [p.name for p in t.config.pools] == ["infra_api_80", "infra_web_8080"]
    text = render(t.config, runtime_socket="/run/portico/haproxy.sock")
    assert "bind ipv4@198.18.100.10:443 transparent ssl crt '/run/certs/infra_cert.pem'" in text
    assert "server s0 ipv4@198.18.2.5:3000" in text


def test_an_unprogrammed_listener_binds_nothing() -> None:
    broken = [LISTENERS[0], {**LISTENERS[1], "tls": {"certificateRefs": [{"name": "missing"}]}}]
    t = translate([gateway(broken)], [], WORLD, {})
    assert [lst.port for lst in t.config.listeners] == [80]
    assert dict((r.name, r.usable) for r in t.listeners[GW]) == {"http": True, "https": False}


def test_the_more_specific_listener_hostname_is_tried_first() -> None:
    listeners = [{"name": "any", "port": 80, "protocol": "HTTP"},
                 {"name": "wild", "port": 80, "protocol": "HTTP", "hostname": "*.example"},
                 {"name": "exact", "port": 80, "protocol": "HTTP", "hostname": "a.example"}]
    routes = [route("infra", n, {"parentRefs": [{"name": "gw", "sectionName": n}],
                                 "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]})
              for n in ("any", "wild", "exact")]
    [lst] = translate([gateway(listeners)], routes, WORLD, {}).config.listeners
    assert [e.hostnames for e in lst.entries] == [("a.example",), ("*.example",), ("",)]
    # Each request belongs to the most specific listener its host matches (GatewayHTTPListenerIsolation).
    assert lst.listener_hostnames == ("a.example", "*.example", "")
    assert [e.listener_hostname for e in lst.entries] == ["a.example", "*.example", ""]


def test_a_more_specific_hostname_wins_over_a_better_path() -> None:
    wide = route("infra", "wide", {"parentRefs": PARENT, "hostnames": ["*.example"], "rules": [
        {"matches": [{"path": {"type": "Exact", "value": "/x"}}], "backendRefs": [{"name": "web", "port": 8080}]}]})
    narrow = route("infra", "narrow", {"parentRefs": PARENT, "hostnames": ["a.example", "b.example"],
                                       "rules": [{"backendRefs": [{"name": "api", "port": 80}]}]})
    lst = next(lst for lst in translate([gateway(LISTENERS[:1])], [wide, narrow], WORLD, {}).config.listeners)
    assert [(e.hostnames, e.match.path.value) for e in lst.entries] == [
        (("a.example",), "/"), (("b.example",), "/"), (("*.example",), "/x")]


def test_filters_reach_the_entries_and_a_backend_refs_own_its_share() -> None:
    r = route("infra", "f", {"parentRefs": PARENT, "rules": [
        {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "X-A", "value": "1"}], "remove": ["X-B"]}},
            {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
         "backendRefs": [{"name": "web", "port": 8080, "filters": [
             {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "X-C", "value": "2"}]}}]}]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/old"}}],
         "filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]})
    [lst] = translate([gateway(LISTENERS[:1])], [r], WORLD, {}).config.listeners
    old, rest = lst.entries
    assert old.filters.redirect is not None and (old.filters.redirect.scheme, old.filters.redirect.status) == (
        "https", 301)
    assert rest.filters.request_headers.set == (("X-A", "1"),) and rest.filters.request_headers.remove == ("X-B",)
    assert rest.filters.rewrite is not None and rest.filters.rewrite.path is not None
    assert rest.filters.rewrite.path.replace_prefix and rest.filters.rewrite.path.value == "/"
    assert rest.backends[0].filters.response_headers.add == (("X-C", "2"),)


def test_a_filter_portico_does_not_serve_refuses_the_route_naming_the_field() -> None:
    mirror = route("infra", "m", {"parentRefs": PARENT, "rules": [
        {"backendRefs": [{"name": "web", "port": 8080}]},
        {"filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "api", "port": 80}}}],
         "backendRefs": [{"name": "web", "port": 8080}]}]})
    backend_redirect = route("infra", "b", {"parentRefs": PARENT, "rules": [{"backendRefs": [
        {"name": "web", "port": 8080, "filters": [{"type": "RequestRedirect", "requestRedirect": {}}]}]}]})
    t = translate([gateway(LISTENERS[:1])], [mirror, backend_redirect], WORLD, {})
    [m] = t.routes[ObjectKey("infra", "m")].parents
    assert (m.accepted.status, m.accepted.reason) == (False, "UnsupportedValue")
    assert m.accepted.message.startswith("spec.rules[1].filters[0].type: RequestMirror is not supported")
    [b] = t.routes[ObjectKey("infra", "b")].parents
    assert b.accepted.message.startswith("spec.rules[0].backendRefs[0].filters[0].type: RequestRedirect")
    assert t.config.listeners[0].entries == () and t.config.pools == ()  # neither is served, not even in part
    assert t.attached_routes == {}
