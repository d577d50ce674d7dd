"""The chart's alert rules and Grafana dashboard: valid for Prometheus's own checker, and reading only metrics
Portico exports (docs/metrics.md)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

FILES = Path(__file__).parents[2] / "charts" / "portico" / "files"
DOC = Path(__file__).parents[2] / "docs" / "metrics.md"


def _documented() -> set[str]:
    return set(re.findall(r"`(portico_[a-z0-9_]+)`", DOC.read_text()))


def _metrics_in(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"portico_[a-z0-9_]+", expr)}


def test_the_alert_rules_pass_promtool_and_read_documented_metrics(tmp_path: Path) -> None:
    rules = FILES / "prometheus-rules.yaml"
    check = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    exprs = [r["expr"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]]
    assert {m for e in exprs for m in _metrics_in(e)} <= _documented()


def test_every_grafana_panel_is_valid_promql_of_documented_metrics(tmp_path: Path) -> None:
    dashboard = json.loads((FILES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs and len({p["id"] for p in dashboard["panels"]}) == len(exprs)
    as_rules = tmp_path / "panels.yaml"  # promtool checks PromQL in rule files: one recording rule per panel
    as_rules.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": [
        {"record": f"panel:{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    check = subprocess.run(["promtool", "check", "rules", str(as_rules)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert {m for e in exprs for m in _metrics_in(e)} <= _documented()
