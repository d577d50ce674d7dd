"""A TrafficPolicy on an HTTP backend: its sections as a pool's HAProxy policy, the pool rendered with it, which
Services count as HTTP backends, and a policy change taken as a reload, never a runtime-API update."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import pytest

from portico.api import v1alpha1 as api
from portico.api.gateway import ObjectKey
from portico.dataplane.haproxy import render, runtime_changes
from portico.dataplane.l7model import ClientPersistence, CookiePersistence, PoolPolicy
from portico.l7.backend_policy import http_backends, pool_policy
from portico.l7.ingress import IngressInput, IngressSpec
from portico.l7.translate import translate
from tests.unit.test_l7_translate import CERT, GW, LISTENERS, PARENT, WORLD, gateway, route


def policy(**spec: Any) -> api.TrafficPolicySpec:
    return msgspec.convert({"targetRefs": [{"kind": "Service", "name": "web"}], **spec}, api.TrafficPolicySpec)


@pytest.mark.parametrize(("spec", "expected"), [
    ({}, PoolPolicy()),
    ({"loadBalancing": {"algorithm": "least-connections"}}, PoolPolicy(balance="leastconn")),
    ({"loadBalancing": {"algorithm": "random"}}, PoolPolicy(balance="random")),
    ({"loadBalancing": {"algorithm": "maglev"}}, PoolPolicy(balance="source")),
    ({"loadBalancing": {"algorithm": "maglev", "hashKey": "FiveTuple"}}, PoolPolicy(balance="random")),
    ({"persistence": {"timeout": "90s", "ipv4PrefixLength": 24}},
     PoolPolicy(persistence=ClientPersistence(90, 24, 128))),
    ({"persistence": {"type": "Cookie", "sessionName": "shop", "idleTimeout": "30m", "absoluteTimeout": "1h1ms",
                      "cookieConfig": {"lifetimeType": "Permanent"}}},
     PoolPolicy(persistence=CookiePersistence("shop", 1800, 3601, permanent=True))),
    ({"persistence": {"type": "Cookie"}}, PoolPolicy(persistence=CookiePersistence("PORTICO_SESSION"))),
    ({"limits": {"requestRatePerClient": {"perSecond": 50, "burst": 10}, "maxConnections": 5}},
     PoolPolicy(request_rate=(50, 10))),
])
def test_a_policys_sections_at_layer_7(spec: dict[str, Any], expected: PoolPolicy) -> None:
    assert pool_policy(policy(**spec)) == expected


def translated(policies: dict[ObjectKey, PoolPolicy]) -> Any:
    web = route("infra", "web", {"parentRefs": PARENT, "rules": [{"backendRefs": [{"name": "web", "port": 8080}]}]})
    return translate([gateway(LISTENERS)], [web], replace(WORLD, pool_policies=policies),
                     {CERT: "/c.pem"}).config


def test_the_governed_services_pools_are_rendered_with_the_policy() -> None:
    cookie = PoolPolicy("leastconn", CookiePersistence("shop", 60, 600, permanent=True), (5, 2))
    config = translated({ObjectKey("infra", "web"): cookie})
    assert [p.policy for p in config.pools] == [cookie]
    backend = render(config, runtime_socket="/s").split("backend infra_web_8080\n", 1)[1].split("\n\n", 1)[0]
    assert backend.splitlines()[:6] == [
        "  balance leastconn",
        "  http-request set-timeout server var(txn.timeout) if { var(txn.timeout) -m found }",
        "  http-request track-sc1 src table rate_infra_web_8080",
        "  http-request deny deny_status 429 if { sc_http_req_rate(1,rate_infra_web_8080) gt 7 }",
        "  cookie shop insert indirect nocache httponly dynamic maxidle 60s maxlife 600s attr 'Max-Age=600'",
        "  dynamic-cookie-key 'infra_web_8080'"]
    client = render(translated({ObjectKey("infra", "web"): PoolPolicy("source", ClientPersistence(90, 24, 56))}),
                    runtime_socket="/s")
    assert "  hash-type consistent\n" in client and "  stick on src,ipmask(24,56)\n" in client


def test_a_policy_change_is_a_reload_and_an_endpoint_change_is_not() -> None:
    plain = translated({})
    governed = translated({ObjectKey("infra", "web"): PoolPolicy("leastconn")})
    assert runtime_changes(plain, governed) is None
    moved = replace(governed, pools=tuple(replace(p, endpoints=(replace(p.endpoints[0], port=4000),))
                                          for p in governed.pools))
    assert runtime_changes(governed, moved) == ["set server infra_web_8080/s0 addr 198.18.2.5 port 4000"]


def test_http_backends_are_what_our_gateways_routes_and_our_ingresses_send_to() -> None:
    ours = route("infra", "ours", {"parentRefs": PARENT, "rules": [
        {"backendRefs": [{"name": "web", "port": 8080}, {"name": "api", "namespace": "apps", "port": 80},
                         {"name": "bucket", "group": "storage.example", "kind": "Bucket"}]}]})
    theirs = route("infra", "theirs", {"parentRefs": [{"name": "other-gw"}],
                                       "rules": [{"backendRefs": [{"name": "elsewhere", "port": 80}]}]})
    ingress = IngressInput(ObjectKey("shop", "ing"), "", msgspec.convert({
        "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
        "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                                       "backend": {"service": {"name": "cart", "port": {"number": 80}}}}]}}]},
        IngressSpec))
    assert http_backends([ours, theirs], {GW}, [ingress]) == {"infra/web", "apps/api", "shop/fallback", "shop/cart"}
