from __future__ import annotations

from typing import Any

import msgspec
import pytest

from portico.api.gateway import BackendRef, ObjectKey, ReferenceGrantSpec
from portico.l7.backends import resolve_backend, resolved_refs
from portico.l7.references import Grant

PORTS = {ObjectKey("apps", "web"): {8080}, ObjectKey("other", "db"): {5432}}


def ref(**kw: Any) -> BackendRef:
    return msgspec.convert(kw, BackendRef)


def route_grant(namespace: str, from_ns: str) -> Grant:
    return Grant(namespace, msgspec.convert({"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                                      "namespace": from_ns}],
                                             "to": [{"group": "", "kind": "Service"}]}, ReferenceGrantSpec))


@pytest.mark.parametrize(("backend", "grants", "reason"), [
    ({"name": "web", "port": 8080}, [], None),
    ({"name": "web", "port": 9}, [], "BackendNotFound"),
    ({"name": "gone", "port": 80}, [], "BackendNotFound"),
    ({"name": "web", "port": 8080, "kind": "Pod"}, [], "InvalidKind"),
    ({"name": "web", "port": 8080, "group": "example.com"}, [], "InvalidKind"),
    ({"name": "db", "namespace": "other", "port": 5432}, [], "RefNotPermitted"),
    ({"name": "db", "namespace": "other", "port": 5432}, [route_grant("other", "apps")], None),
    ({"name": "db", "namespace": "other", "port": 5432}, [route_grant("other", "elsewhere")], "RefNotPermitted"),
])
def test_backend_refs_resolve_or_say_why(backend: dict[str, Any], grants: list[Grant], reason: str | None) -> None:
    b = resolve_backend("HTTPRoute", "apps", ref(**backend), PORTS, grants)
    assert (b.problem.reason if b.problem else None) == reason
    assert b.weight == 1  # an unresolved backend keeps its share (answered 500)


def test_route_resolved_refs_is_the_first_problem() -> None:
    good = resolve_backend("HTTPRoute", "apps", ref(name="web", port=8080), PORTS, [])
    bad = resolve_backend("HTTPRoute", "apps", ref(name="gone", port=1), PORTS, [])
    assert resolved_refs([good]).status is True
    assert (resolved_refs([good, bad]).status, resolved_refs([good, bad]).reason) == (False, "BackendNotFound")
