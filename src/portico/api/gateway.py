"""The parts of Gateway API v1 (gateway.networking.k8s.io, standard channel v1.6.3) that Portico reads, as msgspec
structs decoded from the objects' plain data. Not schemas: the upstream CRDs (charts/portico/crds/gateway-api)
validate; these only type what the translation (portico.l7) reads, and ignore every other field."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct, field

from portico.api.v1alpha1 import LabelSelector  # metav1.LabelSelector, as ours

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
CONTROLLER_NAME = "portico.io/gateway-controller"  # a GatewayClass naming it is Portico's


class ObjectKey(Struct, frozen=True, order=True):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class ParametersReference(Struct, kw_only=True):
    group: str
    kind: str
    name: str
    namespace: str | None = None


class GatewayClassSpec(Struct, kw_only=True):
    controllerName: str
    parametersRef: ParametersReference | None = None


class SecretObjectReference(Struct, kw_only=True):
    name: str
    group: str = ""
    kind: str = "Secret"
    namespace: str | None = None


class ListenerTLSConfig(Struct, kw_only=True):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificateRefs: list[SecretObjectReference] = field(default_factory=list)


class RouteNamespaces(Struct, kw_only=True):
    from_: Literal["All", "Same", "Selector"] = field(default="Same", name="from")
    selector: LabelSelector | None = None


class RouteGroupKind(Struct, kw_only=True, frozen=True):
    kind: str
    group: str = GROUP


class AllowedRoutes(Struct, kw_only=True):
    namespaces: RouteNamespaces = field(default_factory=RouteNamespaces)
    kinds: list[RouteGroupKind] = field(default_factory=list)


class Listener(Struct, kw_only=True):
    name: str
    port: int
    protocol: str
    hostname: str | None = None
    tls: ListenerTLSConfig | None = None
    allowedRoutes: AllowedRoutes = field(default_factory=AllowedRoutes)


class GatewaySpecAddress(Struct, kw_only=True):
    value: str
    type: str = "IPAddress"


class GatewaySpec(Struct, kw_only=True):
    gatewayClassName: str
    listeners: list[Listener]
    addresses: list[GatewaySpecAddress] = field(default_factory=list)


class ParentReference(Struct, kw_only=True, frozen=True):
    name: str
    group: str = GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    sectionName: str | None = None
    port: int | None = None


class HTTPHeader(Struct, kw_only=True, frozen=True):
    name: str
    value: str


class HTTPHeaderFilter(Struct, kw_only=True, frozen=True):
    set: tuple[HTTPHeader, ...] = ()
    add: tuple[HTTPHeader, ...] = ()
    remove: tuple[str, ...] = ()


class HTTPPathModifier(Struct, kw_only=True, frozen=True):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replaceFullPath: str | None = None
    replacePrefixMatch: str | None = None


class HTTPRequestRedirectFilter(Struct, kw_only=True, frozen=True):
    scheme: str | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = None
    statusCode: int = 302


class HTTPURLRewriteFilter(Struct, kw_only=True, frozen=True):
    hostname: str | None = None
    path: HTTPPathModifier | None = None


class HTTPRouteFilter(Struct, kw_only=True, frozen=True):
    """One filter; `type` says which of the fields is set. Types Portico does not serve (RequestMirror,
    ExtensionRef, CORS, ...) are read by their type alone (portico.l7.filters refuses them)."""

    type: str
    requestHeaderModifier: HTTPHeaderFilter | None = None
    responseHeaderModifier: HTTPHeaderFilter | None = None
    requestRedirect: HTTPRequestRedirectFilter | None = None
    urlRewrite: HTTPURLRewriteFilter | None = None


class BackendRef(Struct, kw_only=True):
    name: str
    group: str = ""
    kind: str = "Service"
    namespace: str | None = None
    port: int | None = None
    weight: int = 1
    filters: list[HTTPRouteFilter] = field(default_factory=list)


class HTTPPathMatch(Struct, kw_only=True, frozen=True):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"


class HTTPNameValueMatch(Struct, kw_only=True, frozen=True):
    """A header or query parameter match."""

    name: str
    value: str
    type: Literal["Exact", "RegularExpression"] = "Exact"


class HTTPRouteMatch(Struct, kw_only=True, frozen=True):
    path: HTTPPathMatch = field(default_factory=HTTPPathMatch)
    headers: tuple[HTTPNameValueMatch, ...] = ()
    queryParams: tuple[HTTPNameValueMatch, ...] = ()
    method: str | None = None


class HTTPRouteTimeouts(Struct, kw_only=True, frozen=True):
    """Gateway API durations ("500ms", "1h30m"; "0s" disables)."""

    request: str | None = None
    backendRequest: str | None = None


class RouteRule(Struct, kw_only=True):
    matches: list[HTTPRouteMatch] = field(default_factory=lambda: [HTTPRouteMatch()])
    filters: list[HTTPRouteFilter] = field(default_factory=list)
    backendRefs: list[BackendRef] = field(default_factory=list)
    timeouts: HTTPRouteTimeouts | None = None


class RouteSpec(Struct, kw_only=True):
    """What route attachment reads of an HTTPRoute (and, later, other route kinds)."""

    parentRefs: list[ParentReference] = field(default_factory=list)
    hostnames: list[str] = field(default_factory=list)
    rules: list[RouteRule] = field(default_factory=list)


class ReferenceGrantFrom(Struct, kw_only=True, frozen=True):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(Struct, kw_only=True, frozen=True):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(Struct, kw_only=True):
    from_: list[ReferenceGrantFrom] = field(name="from")
    to: list[ReferenceGrantTo]
