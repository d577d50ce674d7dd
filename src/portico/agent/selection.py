"""Whether an announcement object's nodeSelector selects any node (pure): a condition on the object, so a
selector that matches nothing gets an answer on the object itself, not silence."""

from __future__ import annotations

from collections.abc import Mapping

from portico.api.v1alpha1 import LabelSelector
from portico.ipam.selectors import selector_matches

NODES_SELECTED = "NodesSelected"
LISTED = 10  # nodes named in the message; the rest are counted


def selection_condition(selector: LabelSelector | None, nodes: Mapping[str, Mapping[str, str]],
                        ) -> tuple[bool, str, str]:
    """(status, reason, message) of the `NodesSelected` condition, from every Node's labels."""
    matched = sorted(name for name, labels in nodes.items() if selector_matches(selector, labels))
    if not matched:
        return False, "NoNodeSelected", "nodeSelector matches no node: nothing is announced for this object"
    more = f" and {len(matched) - LISTED} more" if len(matched) > LISTED else ""
    return True, "NodesSelected", f"{len(matched)} node{'s' if len(matched) != 1 else ''}: " \
                                  f"{', '.join(matched[:LISTED])}{more}"
