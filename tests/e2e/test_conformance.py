"""The upstream Gateway API conformance suite (v1.6.3, built from its pinned module) against the lab, from the
client's namespace: the GATEWAY-HTTP profile's core tests all pass, and so does every extended feature Portico's
GatewayClass claims (portico.l7.features) — the claim is only ever what this run shows."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from portico.l7.features import EXTENDED
from tests.e2e.conftest import PORTICO, Lab

CORE_TESTS = 36  # GATEWAY-HTTP core at v1.6.3, as the issue counts them


def test_gateway_http_core_and_every_claimed_extended_feature_pass(lab: Lab, tmp_path: Path) -> None:
    report_path = tmp_path / "report.yaml"
    run = subprocess.run([PORTICO, "dev", "conformance", "--report", str(report_path)], capture_output=True,
                         text=True, env=lab.env, timeout=3600, check=False)
    failures = [line for line in run.stdout.splitlines() if line.lstrip().startswith("--- FAIL")]
    assert run.returncode == 0, "\n".join(failures) or run.stdout[-4000:] + run.stderr[-2000:]
    [profile] = yaml.safe_load(report_path.read_text())["profiles"]
    assert profile["name"] == "GATEWAY-HTTP"
    core, extended = profile["core"], profile["extended"]
    print(f"core {core['statistics']}, extended {extended['statistics']}")
    assert core["result"] == "success" and core["statistics"] == {"Passed": CORE_TESTS, "Failed": 0, "Skipped": 0}
    assert extended["result"] == "success" and extended["statistics"]["Failed"] == 0
    assert extended["statistics"]["Passed"] > 0 and set(extended["supportedFeatures"]) == set(EXTENDED)
