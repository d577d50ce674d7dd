"""The order HTTPRoute matches are tried in on one listener and hostname (pure), as the Gateway API spec sets it:
an Exact path before a prefix, a longer prefix before a shorter, a method match before none, more header matches,
then more query parameter matches; ties go to the older route, then to namespace/name order, then to the rule's
and the match's order within the route."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from portico.api.gateway import HTTPRouteMatch, ObjectKey


@dataclass(frozen=True)
class RankedMatch:
    match: HTTPRouteMatch
    route: ObjectKey
    route_created: str  # metadata.creationTimestamp (RFC 3339 sorts as text)
    rule: int
    index: int  # of the match within its rule


def precedence(m: RankedMatch) -> tuple[object, ...]:
    path = m.match.path
    return (path.type != "Exact", -len(path.value) if path.type == "PathPrefix" else 0, m.match.method is None,
            -len(m.match.headers), -len(m.match.queryParams), m.route_created, m.route, m.rule, m.index)


def ordered(matches: Iterable[RankedMatch]) -> list[RankedMatch]:
    return sorted(matches, key=precedence)
