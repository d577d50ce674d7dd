"""Label selectors (metav1.LabelSelector semantics) over plain label maps."""

from __future__ import annotations

from collections.abc import Mapping

from portico.api.v1alpha1 import LabelSelector


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """None or an empty selector matches everything."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in selector.matchLabels.items()):
        return False
    for req in selector.matchExpressions:
        value = labels.get(req.key)
        match req.operator:
            case "In":
                ok = value is not None and value in req.values
            case "NotIn":
                ok = value is None or value not in req.values
            case "Exists":
                ok = value is not None
            case "DoesNotExist":
                ok = value is None
        if not ok:
            return False
    return True
