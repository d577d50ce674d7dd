"""The Gateway API features Portico's GatewayClass claims in status.supportedFeatures (names as upstream's
conformance suite spells them). A feature is listed here once the suite passes its tests against the lab
(`make conformance`, docs/conformance/); tests/e2e/test_conformance.py runs the suite with exactly this list."""

CORE: tuple[str, ...] = ("Gateway", "HTTPRoute", "ReferenceGrant")
EXTENDED: tuple[str, ...] = (
    "GatewayHTTPListenerIsolation",
    "GatewayPort8080",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
)
SUPPORTED_FEATURES: tuple[str, ...] = CORE + EXTENDED
