"""The Gateway API features Portico's GatewayClass claims in status.supportedFeatures (names as upstream's
conformance suite spells them). A feature is listed here once the suite passes its tests against the lab
(`make conformance`, docs/conformance/)."""

SUPPORTED_FEATURES: tuple[str, ...] = ("Gateway", "HTTPRoute", "ReferenceGrant")
