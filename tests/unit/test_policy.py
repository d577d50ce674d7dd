"""TrafficPolicy semantics (pure): which policy governs a Service, what its fields mean, what it overrides."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from lightkube.models.core_v1 import ServiceSpec

from portico.api import v1alpha1 as api
from portico.policy.attachment import PolicyEntry, Standing, governing, standings
from portico.policy.traffic import (
    ENDPOINT_WEIGHTS,
    LB_ALGORITHM,
    overridden,
    parse_bandwidth,
    parse_duration,
    persistence_timeout,
)


def entry(name: str, created: str, *targets: str, namespace: str = "shop") -> PolicyEntry:
    return PolicyEntry(namespace, name, created, targets)


def test_the_older_policy_governs_and_ties_go_by_name() -> None:
    young = entry("a-young", "2026-12-01T10:00:05Z", "web", "api")
    old = entry("z-old", "2026-12-01T10:00:00Z", "web")
    twin = entry("b-twin", "2026-12-01T10:00:00Z", "web")
    winners = governing([young, old, twin])
    assert winners["shop/web"] == twin  # as old as z-old, and first by name
    assert winners["shop/api"] == young
    assert governing([entry("p", "2026-12-01T10:00:00Z", "web", namespace="other")]).keys() == {"other/web"}


def test_standing_per_target() -> None:
    old = entry("old", "2026-12-01T10:00:00Z", "web")
    young = entry("young", "2026-12-01T10:00:05Z", "web", "api", "gone", "clusterip")
    winners = governing([old, young])
    served = {"shop/web": True, "shop/api": True, "shop/clusterip": False}
    got = {s.target: s.standing for s in standings(young, winners, served.get)}
    assert got == {"web": Standing.CONFLICTED, "api": Standing.ACCEPTED, "gone": Standing.TARGET_NOT_FOUND,
                   "clusterip": Standing.INVALID}
    conflicted = next(s for s in standings(young, winners, served.get) if s.target == "web")
    assert "older TrafficPolicy old" in conflicted.message
    assert [s.standing for s in standings(old, winners, served.get)] == [Standing.ACCEPTED]


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1), ("500ms", 0.5), ("1m30s", 90), ("3h", 10800),
                                               ("1h1m1s1ms", 3661.001)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "1", "s", "1x", "1s2"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_bandwidth_and_persistence_timeout() -> None:
    assert (parse_bandwidth("800"), parse_bandwidth("10k"), parse_bandwidth("20M"), parse_bandwidth("1G")) == (
        800, 10_000, 20_000_000, 1_000_000_000)
    assert persistence_timeout(api.Persistence(timeout="1500ms")) == 2
    assert persistence_timeout(api.Persistence(timeout="10ms")) == 1


def spec(**fields: Any) -> api.TrafficPolicySpec:
    return msgspec.convert({"targetRefs": [{"kind": "Service", "name": "web"}], **fields}, api.TrafficPolicySpec)


def test_overrides_name_what_is_ignored() -> None:
    affinity = ServiceSpec(sessionAffinity="ClientIP")
    policy = spec(loadBalancing={"algorithm": "maglev"}, persistence={"timeout": "1m"})
    messages = overridden(policy, "p", {LB_ALGORITHM: "random", ENDPOINT_WEIGHTS: "default=2"}, affinity)
    assert len(messages) == 3
    assert "loadBalancing.algorithm maglev" in messages[0] and "'random' is ignored" in messages[0]
    assert ENDPOINT_WEIGHTS in messages[1]
    assert "persistence.timeout 1m" in messages[2] and "10800s" in messages[2]
    # the same choices are no disagreement; a policy without those sections overrides nothing
    assert overridden(spec(loadBalancing={"algorithm": "maglev"}), "p", {LB_ALGORITHM: "maglev"}, affinity) == []
    assert overridden(spec(persistence={"timeout": "3h"}), "p", {}, affinity) == []
    assert overridden(spec(), "p", {LB_ALGORITHM: "random"}, affinity) == []
    five = spec(loadBalancing={"algorithm": "maglev", "hashKey": "FiveTuple"})
    assert overridden(five, "p", {LB_ALGORITHM: "maglev-5tuple"}, ServiceSpec()) == []
