"""The permissions table of docs/security.md, read as data: what each component is documented to be granted
(tests/e2e/test_rbac.py compares it with what the lab's API server grants, tests/integration/test_manifests.py
with the rendered chart)."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).parents[1] / "docs" / "security.md"
Grants = dict[str, set[str]]  # resource (with group, as `kubectl auth can-i --list` names it) -> verbs


def documented_grants() -> dict[tuple[str, str], Grants]:
    """(component, where) -> grants."""
    table = DOC.read_text().split("<!-- permissions -->")[1]
    out: dict[tuple[str, str], Grants] = {}
    for line in table.splitlines():
        cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("component", "") or set(cells[0]) <= {"-", " "}:
            continue
        component, resources, verbs, where = cells
        for resource in resources.split(", "):
            out.setdefault((component, where), {}).setdefault(resource, set()).update(verbs.split(", "))
    return out
