"""What a TrafficPolicy's fields mean next to the Service's own shortcuts (annotations, sessionAffinity) (pure).

A policy's section replaces the shortcuts for what it covers: `loadBalancing` replaces the `lb-algorithm`
and `endpoint-weights` annotations, `persistence` replaces `sessionAffinity`. Where both are set and say
different things, `overridden` names what is ignored, for an Event on the Service.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from portico.api import v1alpha1 as api

LB_ALGORITHM = "portico.io/lb-algorithm"
ENDPOINT_WEIGHTS = "portico.io/endpoint-weights"
DEFAULT_AFFINITY_TIMEOUT = 10800  # Kubernetes' default for sessionAffinity ClientIP, seconds

_DURATION_PART = re.compile(r"([0-9]+)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_SI = {"": 1, "k": 1_000, "M": 1_000_000, "G": 1_000_000_000}


def parse_duration(text: str) -> float:
    """A Gateway API Duration ("1s", "500ms", "1m30s") in seconds. The schema has checked its form."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration such as 1s, 500ms or 1m30s")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def parse_bandwidth(text: str) -> int:
    """Bits per second: "10M" = 10,000,000."""
    match = re.fullmatch(r"([0-9]+)([kMG]?)", text)
    if match is None:
        raise ValueError(f"{text!r} is not a bandwidth such as 10M (bits per second)")
    return int(match[1]) * _SI[match[2]]


def algorithm_name(lb: api.LoadBalancing) -> str:
    """The data plane's name for the policy's choice (the same names the annotation takes)."""
    return "maglev-5tuple" if lb.algorithm == "maglev" and lb.hashKey == "FiveTuple" else lb.algorithm


def persistence_timeout(p: api.Persistence) -> int:
    """Whole seconds, at least one (the kernel's set timeouts)."""
    return max(1, math.ceil(parse_duration(p.timeout)))


def overridden(spec: api.TrafficPolicySpec, policy_name: str, annotations: Mapping[str, str],
               service_spec: Any) -> list[str]:
    """The Service's own settings this policy overrides with something different, one message each."""
    out: list[str] = []
    lb = spec.loadBalancing
    if lb is not None:
        value = annotations.get(LB_ALGORITHM)
        if value is not None and value != algorithm_name(lb):
            out.append(f"TrafficPolicy {policy_name} sets loadBalancing.algorithm {algorithm_name(lb)}; annotation "
                       f"{LB_ALGORITHM}={value!r} is ignored")
        if annotations.get(ENDPOINT_WEIGHTS):
            out.append(f"TrafficPolicy {policy_name} sets loadBalancing; annotation {ENDPOINT_WEIGHTS} is ignored")
    p = spec.persistence
    if p is not None and getattr(service_spec, "sessionAffinity", None) == "ClientIP":
        config = service_spec.sessionAffinityConfig
        own = (config.clientIP.timeoutSeconds if config and config.clientIP else None) or DEFAULT_AFFINITY_TIMEOUT
        if own != persistence_timeout(p):
            out.append(f"TrafficPolicy {policy_name} sets persistence.timeout {p.timeout}; spec.sessionAffinityConfig "
                       f"timeout {own}s is ignored")
    return out
