from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any, cast

from lightkube.resources.core_v1 import Service
from lightkube.resources.networking_v1 import Ingress, IngressClass

from portico.api.gateway import ObjectKey
from portico.dataplane.l7model import Endpoint, L7Listener
from portico.l7.ingress import (
    INGRESS_CONTROLLER,
    LEGACY_CLASS,
    IngressInput,
    TranslationInputs,
    ingress_inputs,
    ingress_problems,
    ingress_status,
    our_ingress_classes,
    our_ingresses,
    service_ports,
    translation_inputs,
)
from portico.l7.translate import Translation, World, translate

VIP = ipaddress.ip_address("198.18.100.20")
VIP6 = ipaddress.ip_address("fd00:198:18::20")
ADDRESS = ObjectKey("portico-system", "portico-ingress")
OLD, MID, NEW = "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"


def ingress_class(name: str, controller: str = INGRESS_CONTROLLER, default: bool = False) -> IngressClass:
    annotations = {"ingressclass.kubernetes.io/is-default-class": "true"} if default else {}
    return cast(IngressClass, IngressClass.from_dict({"metadata": {"name": name, "annotations": annotations},
                                                      "spec": {"controller": controller}}))


CLASSES = [ingress_class("portico"), ingress_class("nginx", "k8s.io/ingress-nginx")]


def ingress(ns: str, name: str, spec: dict[str, Any], created: str = MID, *, cls: str | None = "portico",
            annotations: dict[str, str] | None = None) -> Ingress:
    return cast(Ingress, Ingress.from_dict({
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": created, "annotations": annotations or {}},
        "spec": {**({"ingressClassName": cls} if cls else {}), **spec}}))


def service(ns: str, name: str, ports: dict[str, int]) -> Service:
    return cast(Service, Service.from_dict({"metadata": {"namespace": ns, "name": name},
                                            "spec": {"ports": [{"name": n, "port": p} for n, p in ports.items()]}}))


def backend(name: str, port: int | str) -> dict[str, Any]:
    return {"service": {"name": name, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def rule(host: str | None, *paths: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {**({"host": host} if host else {}),
            "http": {"paths": [{"path": p, "pathType": t, "backend": b} for p, t, b in paths]}}


SERVICES = [service("shop", "web", {"http": 8080}), service("shop", "api", {"": 80}),
            service("blog", "site", {"web": 3000})]
ENDPOINT_IP = {ObjectKey("shop", "web"): "198.18.2.5", ObjectKey("shop", "api"): "198.18.3.7",
               ObjectKey("blog", "site"): "198.18.4.9"}


def serve(ingresses: list[Ingress], secrets: dict[ObjectKey, str | None] | None = None,
          classes: list[IngressClass] | None = None) -> tuple[TranslationInputs, Translation, list[IngressInput]]:
    """Our Ingresses through translation_inputs() and then the unchanged translate()."""
    mine = our_ingresses(ingress_inputs(ingresses), our_ingress_classes(CLASSES if classes is None else classes))
    ports = service_ports(SERVICES)
    secrets = secrets or {}
    synthetic = translation_inputs(mine, address=ADDRESS, addresses=(VIP,), services=ports, secrets=secrets)
    world = World(services={k: set(p.values()) for k, p in ports.items()},
                  endpoints={(k, port): (Endpoint(ipaddress.ip_address(ENDPOINT_IP[k]), 9000),)
                             for k, p in ports.items() for port in p.values()},
                  secrets=secrets)
    t = translate(synthetic.gateways, synthetic.routes, replace(world, grants=synthetic.grants),
                  {k: f"/run/certs/{k.namespace}_{k.name}.pem" for k in secrets})
    return synthetic, t, mine


def listener(t: Translation, port: int) -> L7Listener:
    [lst] = [lst for lst in t.config.listeners if lst.port == port]
    return lst


def table(lst: L7Listener) -> list[tuple[str, str, str, tuple[str | None, ...]]]:
    """(host, path type, path, pools) of each entry, in the order HAProxy tries them."""
    return [(e.hostnames[0], e.match.path.type, e.match.path.value, tuple(b.pool for b in e.backends))
            for e in lst.entries]


def test_hosts_and_paths_route_to_services_on_the_shared_address() -> None:
    shop = ingress("shop", "shop", {"rules": [
        rule("shop.example", ("/", "Prefix", backend("web", 8080)), ("/api", "Prefix", backend("api", 80)))]})
    blog = ingress("blog", "blog", {"rules": [rule("blog.example", ("/", "Prefix", backend("site", 3000)))]})
    synthetic, t, _ = serve([shop, blog])

    assert [(lst.address, lst.port, lst.protocol) for lst in t.config.listeners] == [(VIP, 80, "HTTP")]
    # Entries of different names are disjoint: path precedence alone orders them.
    assert table(listener(t, 80)) == [("shop.example", "PathPrefix", "/api", ("shop_api_80",)),
                                      ("blog.example", "PathPrefix", "/", ("blog_site_3000",)),
                                      ("shop.example", "PathPrefix", "/", ("shop_web_8080",))]
    assert {p.name: [str(e.address) for e in p.endpoints] for p in t.config.pools} == {
        "blog_site_3000": ["198.18.4.9"], "shop_api_80": ["198.18.3.7"], "shop_web_8080": ["198.18.2.5"]}
    # Routes from other namespaces than the address's are admitted.
    assert all(s.parents[0].accepted.status for s in t.routes.values()) and len(t.routes) == 2
    assert synthetic.ingress_of == {ObjectKey("shop", "shop#shop.example"): ObjectKey("shop", "shop"),
                                    ObjectKey("blog", "blog#blog.example"): ObjectKey("blog", "blog")}
    assert synthetic.grants == ()  # Services are named from their own namespace: no grant needed


def test_exact_before_prefix_and_implementation_specific_is_a_prefix() -> None:
    ing = ingress("shop", "paths", {"rules": [rule(
        None, ("/a", "Prefix", backend("web", 8080)), ("/a", "Exact", backend("api", 80)),
        ("/a/b", "ImplementationSpecific", backend("api", 80)))]})
    _, t, _ = serve([ing])
    assert table(listener(t, 80)) == [("", "Exact", "/a", ("shop_api_80",)),
                                      ("", "PathPrefix", "/a/b", ("shop_api_80",)),
                                      ("", "PathPrefix", "/a", ("shop_web_8080",))]


def test_a_port_by_name_resolves_to_the_service_port_and_an_unknown_name_is_500() -> None:
    ing = ingress("shop", "named", {"rules": [rule(
        "shop.example", ("/", "Prefix", backend("web", "http")), ("/x", "Prefix", backend("web", "grpc")))]})
    _, t, mine = serve([ing])
    assert table(listener(t, 80)) == [("shop.example", "PathPrefix", "/x", (None,)),
                                      ("shop.example", "PathPrefix", "/", ("shop_web_8080",))]
    assert ingress_problems(mine, service_ports(SERVICES), {})[ObjectKey("shop", "named")] == [
        "spec.rules[0].http.paths[1].backend: Service shop/web has no port named grpc; its requests are answered 500"]


def test_the_oldest_default_backend_is_served_last_and_the_others_are_reported() -> None:
    oldest = ingress("shop", "fallback", {"defaultBackend": backend("web", 8080)}, created=OLD)
    newer = ingress("blog", "fallback", {"defaultBackend": backend("site", 3000)}, created=MID)
    # A catch-all rule of a newer Ingress still wins over the older default backend (it is a rule).
    catch_all = ingress("shop", "all", {"rules": [rule(None, ("/", "Prefix", backend("api", 80)))]}, created=NEW)
    hosted = ingress("blog", "blog", {"rules": [rule("blog.example", ("/b", "Exact", backend("site", 3000)))]},
                     created=NEW)
    synthetic, t, mine = serve([catch_all, newer, hosted, oldest])

    assert table(listener(t, 80)) == [("blog.example", "Exact", "/b", ("blog_site_3000",)),
                                      ("", "PathPrefix", "/", ("shop_api_80",)),
                                      ("", "PathPrefix", "/", ("shop_web_8080",))]
    assert (synthetic.default_backend, synthetic.conflicting) == (ObjectKey("shop", "fallback"),
                                                                  (ObjectKey("blog", "fallback"),))
    assert synthetic.ingress_of[ObjectKey("shop", "fallback#defaultBackend")] == ObjectKey("shop", "fallback")
    problems = ingress_problems(mine, service_ports(SERVICES), {})
    assert problems[ObjectKey("blog", "fallback")] == [
        "spec.defaultBackend is not served: the older Ingress shop/fallback has one, and only one default backend is "
        "served for all Ingresses"]
    assert problems[ObjectKey("shop", "fallback")] == []


def test_tls_of_two_ingresses_serves_both_certificates_on_443() -> None:
    shop = ingress("shop", "shop", {"tls": [{"hosts": ["shop.example"], "secretName": "shop-cert"}],
                                    "rules": [rule("shop.example", ("/", "Prefix", backend("web", 8080)))]},
                   created=OLD)
    blog = ingress("blog", "blog", {"tls": [{"hosts": ["blog.example"], "secretName": "blog-cert"}],
                                    "rules": [rule("blog.example", ("/", "Prefix", backend("site", 3000)))]})
    broken = ingress("blog", "broken", {"tls": [{"secretName": "missing"}, {"secretName": "opaque"}],
                                        "rules": [rule("x.example", ("/", "Prefix", backend("site", 3000)))]},
                     created=NEW)
    secrets: dict[ObjectKey, str | None] = {ObjectKey("shop", "shop-cert"): None, ObjectKey("blog", "blog-cert"): None,
                                            ObjectKey("blog", "opaque"): "type is Opaque, not kubernetes.io/tls",
                                            ObjectKey("blog", "other"): None}
    synthetic, t, mine = serve([shop, blog, broken], secrets)

    https = listener(t, 443)
    # The oldest Ingress's certificate first (HAProxy's default with no SNI match); the broken ones left out, so
    # they do not take HTTPS away from the others.
    assert (https.address, https.protocol) == (VIP, "HTTPS")
    assert https.certificates == ("/run/certs/shop_shop-cert.pem", "/run/certs/blog_blog-cert.pem")
    assert [h for h, *_ in table(https)] == [h for h, *_ in table(listener(t, 80))] == [
        "shop.example", "blog.example", "x.example"]
    # One grant per Secret served, by name, in its namespace, for the Gateway's namespace only.
    assert sorted((g.namespace, [t.name for t in g.spec.to], [f.namespace for f in g.spec.from_])
                  for g in synthetic.grants) == [("blog", ["blog-cert"], ["portico-system"]),
                                                 ("shop", ["shop-cert"], ["portico-system"])]
    assert ingress_problems(mine, service_ports(SERVICES), secrets)[ObjectKey("blog", "broken")] == [
        "spec.tls[0]: Secret blog/missing does not exist; it is not served",
        "spec.tls[1]: Secret blog/opaque: type is Opaque, not kubernetes.io/tls; it is not served"]


def test_no_usable_certificate_binds_no_https() -> None:
    ing = ingress("shop", "shop", {"tls": [{"secretName": "missing"}],
                                   "rules": [rule("shop.example", ("/", "Prefix", backend("web", 8080)))]})
    _, t, _ = serve([ing])
    assert [lst.port for lst in t.config.listeners] == [80]


def test_only_ingresses_of_our_class_are_served() -> None:
    ours = ingress("shop", "ours", {"rules": [rule("a.example", ("/", "Prefix", backend("web", 8080)))]})
    theirs = ingress("shop", "theirs", {"rules": [rule("b.example", ("/", "Prefix", backend("web", 8080)))]},
                     cls="nginx")
    unknown = ingress("shop", "unknown", {"rules": [rule("c.example", ("/", "Prefix", backend("web", 8080)))]},
                      cls="nope")
    legacy = ingress("shop", "legacy", {"rules": [rule("d.example", ("/", "Prefix", backend("web", 8080)))]},
                     cls=None, annotations={LEGACY_CLASS: "portico"})
    legacy_theirs = ingress("shop", "legacy-theirs", {"rules": [rule("e.example", ("/", "Prefix",
                                                                                   backend("web", 8080)))]},
                            cls=None, annotations={LEGACY_CLASS: "nginx"})
    classless = ingress("shop", "classless", {"rules": [rule("f.example", ("/", "Prefix", backend("web", 8080)))]},
                        cls=None)
    _, t, mine = serve([ours, theirs, unknown, legacy, legacy_theirs, classless])
    assert [i.key.name for i in mine] == ["legacy", "ours"]
    assert sorted(h for h, *_ in table(listener(t, 80))) == ["a.example", "d.example"]


def test_an_ingress_without_a_class_is_ours_when_our_class_is_the_default() -> None:
    classless = ingress("shop", "classless", {"rules": [rule("a.example", ("/", "Prefix", backend("web", 8080)))]},
                        cls=None)
    legacy_theirs = ingress("shop", "legacy-theirs", {"rules": [rule("b.example", ("/", "Prefix",
                                                                                   backend("web", 8080)))]},
                            cls=None, annotations={LEGACY_CLASS: "nginx"})
    _, t, _ = serve([classless, legacy_theirs], classes=[ingress_class("portico", default=True), CLASSES[1]])
    assert [h for h, *_ in table(listener(t, 80))] == ["a.example"]
    # The default class of another controller does not make it ours.
    synthetic, t, _ = serve([classless], classes=[ingress_class("portico"),
                                                   ingress_class("nginx", "k8s.io/ingress-nginx", default=True)])
    assert synthetic.gateways == () and t.config.listeners == ()


def test_a_missing_service_or_a_resource_backend_is_answered_500_and_reported() -> None:
    ing = ingress("shop", "gone", {"rules": [rule(
        "shop.example", ("/gone", "Prefix", backend("gone", 80)), ("/port", "Prefix", backend("web", 9)),
        ("/res", "Prefix", {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "b"}}),
        ("/", "Prefix", backend("web", 8080)))]})
    _, t, mine = serve([ing])
    assert table(listener(t, 80)) == [("shop.example", "PathPrefix", "/gone", (None,)),
                                      ("shop.example", "PathPrefix", "/port", (None,)),
                                      ("shop.example", "PathPrefix", "/res", (None,)),
                                      ("shop.example", "PathPrefix", "/", ("shop_web_8080",))]
    assert t.routes[ObjectKey("shop", "gone#shop.example")].resolved_refs.reason == "BackendNotFound"
    assert ingress_problems(mine, service_ports(SERVICES), {})[ObjectKey("shop", "gone")] == [
        "spec.rules[0].http.paths[0].backend: Service shop/gone does not exist; its requests are answered 500",
        "spec.rules[0].http.paths[1].backend: Service shop/web has no port 9; its requests are answered 500",
        "spec.rules[0].http.paths[2].backend: backend k8s.example.com/StorageBucket b: resource backends are not "
        "supported (only Services); its requests are answered 500"]


def test_rules_of_one_host_share_a_route_and_a_wildcard_host_is_kept() -> None:
    ing = ingress("shop", "multi", {"rules": [
        rule("*.shop.example", ("/", "Prefix", backend("web", 8080))),
        rule("a.shop.example", ("/", "Prefix", backend("api", 80))),
        rule("*.shop.example", ("/w", "Exact", backend("api", 80)))]})
    synthetic, t, _ = serve([ing])
    assert [(r.key.name, r.spec.hostnames, len(r.spec.rules)) for r in synthetic.routes] == [
        ("multi#*.shop.example", ["*.shop.example"], 2), ("multi#a.shop.example", ["a.shop.example"], 1)]
    assert table(listener(t, 80)) == [("a.shop.example", "PathPrefix", "/", ("shop_api_80",)),
                                      ("*.shop.example", "Exact", "/w", ("shop_api_80",)),
                                      ("*.shop.example", "PathPrefix", "/", ("shop_web_8080",))]


def test_no_ingress_of_ours_means_no_gateway() -> None:
    synthetic, t, _ = serve([ingress("shop", "theirs", {"defaultBackend": backend("web", 8080)}, cls="nginx")])
    assert (synthetic.gateways, synthetic.routes, t.config.listeners) == ((), (), ())


def test_ingress_status_lists_the_shared_addresses() -> None:
    assert ingress_status([VIP, VIP6, VIP]) == [{"ip": "198.18.100.20"}, {"ip": "fd00:198:18::20"}]
