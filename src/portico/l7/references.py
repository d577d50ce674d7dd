"""ReferenceGrant: may an object in one namespace refer to one in another (pure)?"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from portico.api.gateway import ReferenceGrantSpec


@dataclass(frozen=True)
class Grant:
    namespace: str  # where the ReferenceGrant lives: the namespace of what it lets be referred to
    spec: ReferenceGrantSpec


@dataclass(frozen=True)
class Reference:
    from_group: str
    from_kind: str
    from_namespace: str
    to_group: str
    to_kind: str
    to_namespace: str
    to_name: str


def permitted(ref: Reference, grants: Iterable[Grant]) -> bool:
    """Same-namespace references need no grant; others need one in the target's namespace naming both ends (a `to`
    without a name grants every object of that kind)."""
    if ref.from_namespace == ref.to_namespace:
        return True
    return any(
        g.namespace == ref.to_namespace
        and any(f.group == ref.from_group and f.kind == ref.from_kind and f.namespace == ref.from_namespace
                for f in g.spec.from_)
        and any(t.group == ref.to_group and t.kind == ref.to_kind and t.name in (None, "", ref.to_name)
                for t in g.spec.to)
        for g in grants)
