"""docs/metrics.md lists every metric the code exports, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
SUFFIXES = re.compile(r"_(total|bucket|count|sum|created)$")


def test_every_metric_in_the_code_is_documented_and_every_documented_one_exists() -> None:
    code = {name for path in (ROOT / "src/portico").rglob("*.py")
            for name in re.findall(r'"(portico_[a-z][a-z0-9_]*)"', path.read_text())}
    doc = (ROOT / "docs/metrics.md").read_text()
    documented = {SUFFIXES.sub("", name) for name in re.findall(r"`(portico_[a-z0-9_]+)`", doc)}
    assert code == {SUFFIXES.sub("", name) for name in code}  # no suffix in the code: the client adds them
    assert sorted(code - documented) == [], "exported but not in docs/metrics.md"
    assert sorted(documented - code) == [], "in docs/metrics.md but not exported"
