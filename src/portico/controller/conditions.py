"""metav1.Condition lists: set one condition, keeping its transition time unless its status changes (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: list[dict[str, Any]], *, type: str, status: bool, reason: str, message: str,
                  generation: int | None = None) -> list[dict[str, Any]]:
    """A new list with condition `type` set; other conditions are kept as they are."""
    value = "True" if status else "False"
    old = next((c for c in conditions if c.get("type") == type), None)
    condition: dict[str, Any] = {
        "type": type, "status": value, "reason": reason, "message": message,
        "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == value
        and old.get("lastTransitionTime") else now_rfc3339(),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return [*(c for c in conditions if c.get("type") != type), condition]


def remove_condition(conditions: list[dict[str, Any]], type: str) -> list[dict[str, Any]]:
    return [c for c in conditions if c.get("type") != type]


def same_conditions(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal but for transition times (which do not change unless status does)."""
    def strip(cs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in cs),
                      key=lambda c: str(c.get("type")))
    return strip(a) == strip(b)
