"""networking.k8s.io/v1 Ingresses of Portico's IngressClass as inputs to the Gateway API translation (pure).

Ingress is served by the same engine as HTTPRoute: this module only rewrites Ingresses into one synthetic
`GatewayInput`, synthetic `RouteInput`s and the `Grant`s they need, and `portico.l7.translate.translate()` — unchanged
— turns them into the L7 model along with every real Gateway and route:

    mine = our_ingresses(ingress_inputs(ingress_objects), our_ingress_classes(class_objects))
    synthetic = translation_inputs(mine, address=ObjectKey("portico-system", "portico-ingress"),
                                   addresses=vips, services=service_ports(service_objects), secrets=world.secrets)
    translate([*gateways, *synthetic.gateways], [*routes, *synthetic.routes],
              replace(world, grants=(*world.grants, *synthetic.grants)), certificate_file)

Which Ingresses are ours: `spec.ingressClassName` names an IngressClass whose `spec.controller` is INGRESS_CONTROLLER;
or the Ingress names no class and one of our IngressClasses is annotated `ingressclass.kubernetes.io/is-default-class:
"true"`. The legacy annotation `kubernetes.io/ingress.class` is honoured as if it were `spec.ingressClassName` (the
API server refuses an Ingress that sets both): many charts still write only the annotation, and reading it costs one
line. An Ingress carrying it is never taken as "no class" by the default-class rule.

The mapping:
* Address: every Ingress of ours shares one LoadBalancer Service's address. It is one Gateway keyed by that Service's
  key, with an HTTP listener on 80 and, when some Ingress names a usable TLS Secret, an HTTPS listener on 443 whose
  certificateRefs are all of them (HAProxy picks one by SNI among the certificates' own names; `tls[].hosts` is not
  read; with no SNI match the first — the oldest Ingress's — is served). A Secret that is missing or no certificate is
  left out, not listed: the translation judges a listener's certificateRefs all or nothing, and one Ingress's bad
  Secret must not take HTTPS away from the others (ingress_problems() reports it). Both listeners admit routes from
  every namespace, and every rule is served on both ports (no HTTP→HTTPS redirect).
* Routes: one per (Ingress, host), keyed `NAMESPACE/NAME#HOST` (`#*` for rules without a host, which match any host):
  an HTTPRoute serves its hostnames on all its rules, so an Ingress whose rules differ in host needs one per host. The
  `#` keeps the keys from ever equalling a real HTTPRoute's (names cannot hold one), so the statuses the translation
  returns for them are never taken for an HTTPRoute's. Each route is in its Ingress's namespace, so its Service
  references are same-namespace and need no grant; only the TLS Secrets (referred to by the Gateway, in the Service's
  namespace) get one each — by name, never a wildcard.
* Paths: `Exact` → Exact; `Prefix` → PathPrefix (both element-wise, `/foo` matching `/foo/bar` not `/foobar`);
  `ImplementationSpecific` → PathPrefix, its path taken literally (no regular expressions). The Gateway API order (an
  Exact before any prefix, then the longest prefix) is the Ingress spec's "longest match, Exact on a tie": an Exact
  path only matches itself, and no prefix matching it is longer. Across Ingresses, the same path on the same host goes
  to the older Ingress.
* Backends: `service.port.number` as is; `service.port.name` resolved to that Service's port number; a name that does
  not resolve becomes port 0, and a `resource` backend a reference to that kind — both unresolvable, so the
  translation answers their requests 500, as it does for a missing Service.
* `spec.defaultBackend`: serves what no rule of any Ingress matches. Of several, the oldest Ingress's (creation time,
  then namespace/name) is served and the others are reported. It is its own route, `NAMESPACE/NAME#defaultBackend`,
  any host, PathPrefix `/`, created at LAST: the translation ranks any-host entries after every named host, and among
  them a `/` prefix after any longer path, ties going to the older route — LAST is older than nothing.

Wildcard hosts: an Ingress `*.foo.com` matches exactly one label (`bar.foo.com`, not `baz.bar.foo.com`); the engine
gives it Gateway API's meaning, one or more labels. Portico serves the wider one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import msgspec
from lightkube.resources.core_v1 import Service
from lightkube.resources.networking_v1 import Ingress, IngressClass
from msgspec import Struct, field

from portico.api.gateway import (
    GROUP,
    AllowedRoutes,
    BackendRef,
    GatewaySpec,
    HTTPPathMatch,
    HTTPRouteMatch,
    Listener,
    ListenerTLSConfig,
    ObjectKey,
    ParentReference,
    ReferenceGrantFrom,
    ReferenceGrantSpec,
    ReferenceGrantTo,
    RouteNamespaces,
    RouteRule,
    RouteSpec,
    SecretObjectReference,
)
from portico.ipam.blocks import IPAddress
from portico.l7.inputs import key_of
from portico.l7.references import Grant
from portico.l7.translate import GatewayInput, RouteInput

log = logging.getLogger(__name__)

INGRESS_CONTROLLER = "portico.io/ingress-controller"  # an IngressClass whose spec.controller is this is Portico's
INGRESS_SERVICE = "portico-ingress"  # the shared address: a LoadBalancer Service in Portico's namespace (the chart's)
DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS = "kubernetes.io/ingress.class"
HTTP_PORT, HTTPS_PORT = 80, 443
# The default backend's route's creation time: after any real one (RFC 3339 text sorts by time), so it ranks last.
LAST = "9999-12-31T23:59:59Z"
DEFAULT_BACKEND = "defaultBackend"  # the key suffix of the default backend's route: no host is spelt like it


# The parts of networking.k8s.io/v1 Ingress read here, as decoded from the object's plain data (the API server has
# validated it; other fields are ignored).
class ServiceBackendPort(Struct, kw_only=True):
    name: str | None = None
    number: int | None = None


class IngressServiceBackend(Struct, kw_only=True):
    name: str
    port: ServiceBackendPort = field(default_factory=ServiceBackendPort)


class TypedLocalObjectReference(Struct, kw_only=True):
    kind: str
    name: str
    apiGroup: str | None = None


class IngressBackend(Struct, kw_only=True):
    service: IngressServiceBackend | None = None
    resource: TypedLocalObjectReference | None = None


class HTTPIngressPath(Struct, kw_only=True):
    backend: IngressBackend
    path: str | None = None
    pathType: Literal["Exact", "Prefix", "ImplementationSpecific"] = "ImplementationSpecific"


class HTTPIngressRuleValue(Struct, kw_only=True):
    paths: list[HTTPIngressPath] = field(default_factory=list)


class IngressRule(Struct, kw_only=True):
    host: str | None = None
    http: HTTPIngressRuleValue | None = None


class IngressTLS(Struct, kw_only=True):
    hosts: list[str] = field(default_factory=list)
    secretName: str | None = None


class IngressSpec(Struct, kw_only=True):
    ingressClassName: str | None = None
    defaultBackend: IngressBackend | None = None
    rules: list[IngressRule] = field(default_factory=list)
    tls: list[IngressTLS] = field(default_factory=list)


@dataclass(frozen=True)
class IngressInput:
    key: ObjectKey
    created: str  # metadata.creationTimestamp, as inputs.route_inputs writes it (so the two sort together)
    spec: IngressSpec
    legacy_class: str | None = None  # the kubernetes.io/ingress.class annotation


@dataclass(frozen=True)
class TranslationInputs:
    """What the Ingresses add to translate()'s inputs."""

    gateways: tuple[GatewayInput, ...]  # the shared address's Gateway; none while no Ingress is ours
    routes: tuple[RouteInput, ...]
    grants: tuple[Grant, ...]  # to add to World.grants
    ingress_of: Mapping[ObjectKey, ObjectKey]  # synthetic route → its Ingress
    default_backend: ObjectKey | None  # the Ingress whose spec.defaultBackend is served
    conflicting: tuple[ObjectKey, ...]  # the other Ingresses with a spec.defaultBackend, not served


# --- adapters from the API objects (the informers' lightkube objects) ---------------------------------------------

def our_ingress_classes(classes: Iterable[IngressClass]) -> dict[str, bool]:
    """Portico's IngressClasses by name → whether it is the cluster's default class."""
    return {c.metadata.name: (c.metadata.annotations or {}).get(DEFAULT_CLASS) == "true"
            for c in classes
            if c.metadata is not None and c.metadata.name and c.spec is not None
            and c.spec.controller == INGRESS_CONTROLLER}


def ingress_inputs(ingresses: Iterable[Ingress]) -> list[IngressInput]:
    """Live Ingresses as plain data, by key. One whose spec cannot be read is logged and skipped."""
    out = []
    for obj in ingresses:
        meta = obj.metadata
        if meta is None or meta.deletionTimestamp is not None:
            continue
        try:
            spec = msgspec.convert(obj.spec.to_dict() if obj.spec is not None else {}, IngressSpec)
        except msgspec.ValidationError as e:
            log.warning("Ingress %s: unreadable spec (%s); ignored", key_of(obj), e)
            continue
        out.append(IngressInput(key_of(obj), str(meta.creationTimestamp or ""), spec,
                                (meta.annotations or {}).get(LEGACY_CLASS)))
    return sorted(out, key=lambda i: i.key)


def service_ports(services: Iterable[Service]) -> dict[ObjectKey, dict[str, int]]:
    """Each Service's ports, name → number ("" for the unnamed port of a one-port Service)."""
    return {key_of(s): {p.name or "": p.port for p in s.spec.ports or []} for s in services if s.spec is not None}


def ingress_status(addresses: Iterable[IPAddress]) -> list[dict[str, str]]:
    """status.loadBalancer.ingress of every Ingress of ours: the shared address, IPv4 or IPv6, in the given order."""
    return [{"ip": str(a)} for a in dict.fromkeys(addresses)]


# --- the pure core ---------------------------------------------------------------------------------------------------

def our_ingresses(ingresses: Iterable[IngressInput], classes: Mapping[str, bool]) -> list[IngressInput]:
    """The Ingresses of one of our IngressClasses (`classes`: our_ingress_classes()), oldest first."""
    default = any(classes.values())
    out = []
    for ing in ingresses:
        name = ing.spec.ingressClassName or ing.legacy_class
        if (name in classes) if name else default:
            out.append(ing)
    return sorted(out, key=_age)


def _age(ing: IngressInput) -> tuple[str, ObjectKey]:
    return (ing.created, ing.key)


def _default_backends(ingresses: Iterable[IngressInput]) -> tuple[IngressInput | None, list[IngressInput]]:
    """The Ingress whose defaultBackend is served (the oldest), and the others that have one."""
    having = sorted((i for i in ingresses if i.spec.defaultBackend is not None), key=_age)
    return (having[0] if having else None), having[1:]


def _backend_ref(backend: IngressBackend, services: Mapping[ObjectKey, Mapping[str, int]],
                 namespace: str) -> BackendRef:
    """The backendRef the translation resolves, or fails to (its share answered 500): see the module docstring."""
    svc = backend.service
    if svc is None:
        res = backend.resource
        if res is None:  # neither (the API server refuses that): as unresolvable
            return BackendRef(name="", kind="")
        # Kept as what it is, with no port: the translation resolves only a Service port, so this never resolves.
        return BackendRef(name=res.name, group=res.apiGroup or "", kind=res.kind)
    port = svc.port.number
    if port is None:
        port = services.get(ObjectKey(namespace, svc.name), {}).get(svc.port.name or "", 0)  # 0: no such port
    return BackendRef(name=svc.name, port=port)


def _path_match(path: HTTPIngressPath) -> HTTPRouteMatch:
    return HTTPRouteMatch(path=HTTPPathMatch(type="Exact" if path.pathType == "Exact" else "PathPrefix",
                                             value=path.path or "/"))


def _usable_certificates(ingresses: Iterable[IngressInput],
                         secrets: Mapping[ObjectKey, str | None]) -> list[ObjectKey]:
    """The TLS Secrets of the Ingresses that exist and are certificates, in order (oldest Ingress first), once."""
    keys = (ObjectKey(i.key.namespace, t.secretName) for i in ingresses for t in i.spec.tls if t.secretName)
    return [k for k in dict.fromkeys(keys) if k in secrets and secrets[k] is None]


def _gateway(address: ObjectKey, addresses: tuple[IPAddress, ...], certificates: list[ObjectKey]) -> GatewayInput:
    everyone = AllowedRoutes(namespaces=RouteNamespaces(from_="All"))  # Ingresses are in any namespace
    listeners = [Listener(name="http", port=HTTP_PORT, protocol="HTTP", allowedRoutes=everyone)]
    if certificates:  # an HTTPS listener without one would not be programmed anyway
        refs = [SecretObjectReference(name=k.name, namespace=k.namespace) for k in certificates]
        listeners.append(Listener(name="https", port=HTTPS_PORT, protocol="HTTPS", allowedRoutes=everyone,
                                  tls=ListenerTLSConfig(certificateRefs=refs)))
    # No GatewayClass: translate() reads none, and this Gateway is no API object.
    return GatewayInput(address, GatewaySpec(gatewayClassName="", listeners=listeners), addresses)


def _secret_grant(gateway: ObjectKey, secret: ObjectKey) -> Grant:
    return Grant(secret.namespace, ReferenceGrantSpec(
        from_=[ReferenceGrantFrom(group=GROUP, kind="Gateway", namespace=gateway.namespace)],
        to=[ReferenceGrantTo(group="", kind="Secret", name=secret.name)]))


def translation_inputs(ingresses: Iterable[IngressInput], *, address: ObjectKey, addresses: tuple[IPAddress, ...],
                       services: Mapping[ObjectKey, Mapping[str, int]],
                       secrets: Mapping[ObjectKey, str | None]) -> TranslationInputs:
    """Our Ingresses (our_ingresses()) as a Gateway at `address` (the shared LoadBalancer Service's key) holding
    `addresses`, routes attached to it, and the grants for its certificates. `services`: service_ports();
    `secrets`: World.secrets (Secret → why it is no certificate, None when it is one)."""
    ingresses = sorted(ingresses, key=_age)
    if not ingresses:
        return TranslationInputs((), (), (), {}, None, ())
    certificates = _usable_certificates(ingresses, secrets)
    parent = [ParentReference(name=address.name, namespace=address.namespace)]  # every listener
    routes, ingress_of = [], {}
    for ing in ingresses:
        ns = ing.key.namespace
        by_host: dict[str, list[RouteRule]] = {}  # in the order hosts first appear
        for rule in ing.spec.rules:
            for path in rule.http.paths if rule.http else []:
                by_host.setdefault(rule.host or "", []).append(RouteRule(
                    matches=[_path_match(path)], backendRefs=[_backend_ref(path.backend, services, ns)]))
        for host, rules in by_host.items():
            key = ObjectKey(ns, f"{ing.key.name}#{host or '*'}")
            routes.append(RouteInput(key, ing.created, RouteSpec(parentRefs=parent, hostnames=[host] if host else [],
                                                                 rules=rules)))
            ingress_of[key] = ing.key
    served, others = _default_backends(ingresses)
    if served is not None and served.spec.defaultBackend is not None:
        key = ObjectKey(served.key.namespace, f"{served.key.name}#{DEFAULT_BACKEND}")
        ref = _backend_ref(served.spec.defaultBackend, services, served.key.namespace)
        routes.append(RouteInput(key, LAST, RouteSpec(parentRefs=parent, rules=[
            RouteRule(matches=[HTTPRouteMatch()], backendRefs=[ref])])))  # any host, PathPrefix /
        ingress_of[key] = served.key
    grants = tuple(_secret_grant(address, k) for k in certificates if k.namespace != address.namespace)
    return TranslationInputs((_gateway(address, addresses, certificates),), tuple(routes), grants, ingress_of,
                             served.key if served else None, tuple(i.key for i in others))


def _backend_problem(backend: IngressBackend, namespace: str,
                     services: Mapping[ObjectKey, Mapping[str, int]]) -> str | None:
    svc = backend.service
    if svc is None:
        res = backend.resource
        what = f"{res.apiGroup or 'core'}/{res.kind} {res.name}" if res else "nothing"
        return f"backend {what}: resource backends are not supported (only Services)"
    key = ObjectKey(namespace, svc.name)
    if key not in services:
        return f"Service {key} does not exist"
    if svc.port.number is None:
        if (svc.port.name or "") not in services[key]:
            return f"Service {key} has no port named {svc.port.name or '(none)'}"
    elif svc.port.number not in services[key].values():
        return f"Service {key} has no port {svc.port.number}"
    return None


def ingress_problems(ingresses: Iterable[IngressInput], services: Mapping[ObjectKey, Mapping[str, int]],
                     secrets: Mapping[ObjectKey, str | None]) -> dict[ObjectKey, list[str]]:
    """Per Ingress of ours (every one, most with none), what is not served as written, in words for an Event.
    Includes the default backends not served (as TranslationInputs.conflicting)."""
    ingresses = list(ingresses)
    served, others = _default_backends(ingresses)
    out: dict[ObjectKey, list[str]] = {}
    for ing in ingresses:
        problems = out[ing.key] = []
        ns = ing.key.namespace
        if ing.spec.defaultBackend is not None:
            if (p := _backend_problem(ing.spec.defaultBackend, ns, services)) is not None:
                problems.append(f"spec.defaultBackend: {p}; its requests are answered 500")
            if served is not None and ing.key in {o.key for o in others}:
                problems.append(f"spec.defaultBackend is not served: the older Ingress {served.key} has one, and "
                                "only one default backend is served for all Ingresses")
        for r, rule in enumerate(ing.spec.rules):
            for i, path in enumerate(rule.http.paths if rule.http else []):
                if (p := _backend_problem(path.backend, ns, services)) is not None:
                    problems.append(f"spec.rules[{r}].http.paths[{i}].backend: {p}; its requests are answered 500")
        for t, tls in enumerate(ing.spec.tls):
            if not tls.secretName:
                problems.append(f"spec.tls[{t}]: no secretName; no certificate of this Ingress is served")
                continue
            key = ObjectKey(ns, tls.secretName)
            if key not in secrets:
                problems.append(f"spec.tls[{t}]: Secret {key} does not exist; it is not served")
            elif (why := secrets[key]) is not None:
                problems.append(f"spec.tls[{t}]: Secret {key}: {why}; it is not served")
    return out
