"""HTTPRoute filters and timeouts as the L7 model's (pure): the filter types Portico serves, and a clear refusal,
naming the field, of those it does not — the route is then not Accepted (reason UnsupportedValue, as the spec
suggests for filters an implementation cannot honour) rather than served without what its author asked for."""

from __future__ import annotations

import re

from portico.api.gateway import HTTPHeaderFilter, HTTPPathModifier, HTTPRouteFilter, HTTPRouteTimeouts
from portico.dataplane.l7model import Filters, HeaderEdits, NewPath, Redirect, Rewrite
from portico.l7.listeners import Cond

DURATION_PART = re.compile(r"([0-9]+)(h|ms|m|s)")
MILLISECONDS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
RULE_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite")
BACKEND_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier")


def _edits(spec: HTTPHeaderFilter | None) -> HeaderEdits:
    if spec is None:
        return HeaderEdits()
    return HeaderEdits(tuple((h.name, h.value) for h in spec.set), tuple((h.name, h.value) for h in spec.add),
                       tuple(spec.remove))


def _path(spec: HTTPPathModifier | None) -> NewPath | None:
    if spec is None:
        return None
    if spec.type == "ReplacePrefixMatch":
        return NewPath(spec.replacePrefixMatch or "", replace_prefix=True)
    return NewPath(spec.replaceFullPath or "/", replace_prefix=False)


def model_filters(specs: list[HTTPRouteFilter], field: str,
                  served: tuple[str, ...] = RULE_FILTERS) -> Filters | Cond:
    """A rule's (or a backendRef's) filters, or why the route cannot be accepted. `field`: where they are, e.g.
    spec.rules[0].filters, for the message."""
    request, response, redirect, rewrite = HeaderEdits(), HeaderEdits(), None, None
    for j, f in enumerate(specs):
        if f.type not in served:
            return Cond("Accepted", False, "UnsupportedValue",
                        f"{field}[{j}].type: {f.type} is not supported here by Portico "
                        f"(supported: {', '.join(served)})")
        if f.type == "RequestHeaderModifier":
            request = _edits(f.requestHeaderModifier)
        elif f.type == "ResponseHeaderModifier":
            response = _edits(f.responseHeaderModifier)
        elif f.type == "RequestRedirect" and f.requestRedirect is not None:
            r = f.requestRedirect
            redirect = Redirect(r.statusCode, r.scheme, r.hostname, r.port, _path(r.path))
        elif f.type == "URLRewrite" and f.urlRewrite is not None:
            rewrite = Rewrite(f.urlRewrite.hostname, _path(f.urlRewrite.path))
    return Filters(request, response, redirect, rewrite)


def duration_ms(duration: str) -> int:
    """A Gateway API duration (GEP-2257: "1h", "500ms", "1m30s"; the CRD validates the form) in milliseconds."""
    return sum(int(n) * MILLISECONDS[unit] for n, unit in DURATION_PART.findall(duration))


def response_timeout_ms(timeouts: HTTPRouteTimeouts | None) -> int | None:
    """How long the backend may take to answer a request of the rule: the shorter of `request` and
    `backendRequest` (HAProxy sends a request once, so the two bound the same wait); None when neither is set or
    both are "0s" (disabled: HAProxy's default server timeout applies)."""
    if timeouts is None:
        return None
    set_ = [ms for d in (timeouts.request, timeouts.backendRequest) if d and (ms := duration_ms(d)) > 0]
    return min(set_) if set_ else None
