from __future__ import annotations

from typing import Any

import msgspec

from portico.api.gateway import HTTPRouteMatch, ObjectKey
from portico.l7.precedence import RankedMatch, ordered


def ranked(match: dict[str, Any], created: str = "2026-01-01T00:00:00Z", rule: int = 0,
           route: str = "r") -> RankedMatch:
    return RankedMatch(msgspec.convert(match, HTTPRouteMatch), ObjectKey("ns", route), created, rule, 0)


def names(matches: list[RankedMatch], by: dict[int, str]) -> list[str]:
    return [by[id(m)] for m in matches]


def test_spec_precedence_exact_longer_prefix_method_headers_query() -> None:
    cases: dict[str, dict[str, Any]] = {
        "prefix-root": {"path": {"type": "PathPrefix", "value": "/"}},
        "prefix-long": {"path": {"type": "PathPrefix", "value": "/v2/api"}},
        "prefix-mid": {"path": {"type": "PathPrefix", "value": "/v2"}},
        "exact": {"path": {"type": "Exact", "value": "/"}},
        "mid-method": {"path": {"type": "PathPrefix", "value": "/v2"}, "method": "GET"},
        "mid-headers": {"path": {"type": "PathPrefix", "value": "/v2"}, "method": "GET",
                        "headers": [{"name": "a", "value": "1"}]},
        "mid-query": {"path": {"type": "PathPrefix", "value": "/v2"}, "method": "GET",
                      "headers": [{"name": "a", "value": "1"}], "queryParams": [{"name": "q", "value": "1"}]},
    }
    items = {n: ranked(m) for n, m in cases.items()}
    by = {id(m): n for n, m in items.items()}
    assert names(ordered(reversed(list(items.values()))), by) == [
        "exact", "prefix-long", "mid-query", "mid-headers", "mid-method", "prefix-mid", "prefix-root"]


def test_ties_go_to_the_older_route_then_name_then_rule_order() -> None:
    same = {"path": {"type": "PathPrefix", "value": "/"}}
    older = ranked(same, created="2025-01-01T00:00:00Z", route="z")
    a_rule1 = ranked(same, route="a", rule=1)
    a_rule0 = ranked(same, route="a", rule=0)
    b = ranked(same, route="b")
    by = {id(older): "older", id(a_rule1): "a1", id(a_rule0): "a0", id(b): "b"}
    assert names(ordered([b, a_rule1, older, a_rule0]), by) == ["older", "a0", "a1", "b"]


def test_a_rule_without_matches_matches_every_path() -> None:
    from portico.api.gateway import RouteRule

    rule = msgspec.convert({}, RouteRule)
    assert [(m.path.type, m.path.value) for m in rule.matches] == [("PathPrefix", "/")]
