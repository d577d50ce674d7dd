"""`portico status` and `portico explain` against the lab (and through kubectl, as its `portico` plugin): a healthy
Service, an exhausted pool, a requested address outside every pool, a Service with no ready endpoint, a node that
cannot announce (an L2Advertisement naming an interface the nodes lack), and backends failing their health check —
each named by `explain` at the step where it breaks, with what to change."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import PORTICO, Lab, wait_for
from tests.e2e.manifests import documents, echo_deployment, lb_service

NS = "views-e2e"
SETUP = textwrap.dedent(f"""
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: views}}
    spec: {{addresses: [198.18.0.160/30], autoAssign: false}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: views-full}}
    spec: {{addresses: [198.18.0.168/32], autoAssign: false}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: IPPool
    metadata: {{name: views-noif}}
    spec: {{addresses: [198.18.0.172/30], autoAssign: false}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: L2Advertisement
    metadata: {{name: views}}
    spec: {{ipPools: [views, views-full]}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: L2Advertisement
    metadata: {{name: views-noif}}
    spec: {{ipPools: [views-noif], interfaces: [eth9]}}
    ---
    apiVersion: portico.io/v1alpha1
    kind: TrafficPolicy
    metadata: {{name: sick, namespace: {NS}}}
    spec:
      targetRefs: [{{kind: Service, name: sick}}]
      healthCheck: {{type: TCP, port: 9, interval: 500ms, timeout: 250ms}}
    """) + documents(echo_deployment("echo", NS, replicas=2))
SERVICES = {  # name -> (pool annotation or requested address, selector)
    "ok": ({"portico.io/ip-pool": "views"}, "echo"),
    "full-a": ({"portico.io/ip-pool": "views-full"}, "echo"),
    "full-b": ({"portico.io/ip-pool": "views-full"}, "echo"),
    "outside": ({"portico.io/load-balancer-ips": "198.18.201.1"}, "echo"),
    "empty": ({"portico.io/ip-pool": "views"}, "nothing"),
    "noif": ({"portico.io/ip-pool": "views-noif"}, "echo"),
    "sick": ({"portico.io/ip-pool": "views"}, "echo"),
}


def run(lab: Lab, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=lab.env, timeout=60, check=False)


def explained(lab: Lab, name: str) -> tuple[int, str]:
    proc = run(lab, PORTICO, "explain", f"service/{name}", "-n", NS)
    return proc.returncode, proc.stdout + proc.stderr


def vip_rows(lab: Lab) -> dict[str, dict[str, Any]]:
    out = run(lab, PORTICO, "status", "-n", NS, "-o", "json")
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)["items"]}


@pytest.fixture(scope="module")
def views(lab: Lab) -> Iterator[None]:
    lab.kubectl("create", "namespace", NS)
    lab.kubectl("apply", "-f", "-", stdin=SETUP)
    for name, (wanted, app) in SERVICES.items():
        if name == "full-b":  # after full-a holds the pool's only address
            wait_for(lambda: vip_rows(lab).get("full-a", {}).get("addresses"), 60, "full-a's address")
        lab.kubectl("apply", "-f", "-", stdin=lb_service(name, NS, app, wanted))
    try:
        wait_for(lambda: vip_rows(lab).get("ok", {}).get("state") == "Serving", 90, "the ok Service serving")
        yield
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=90s")
        lab.kubectl("delete", "l2advertisement", "views", "views-noif", "--ignore-not-found")
        lab.kubectl("delete", "ippool", "views", "views-full", "views-noif", "--ignore-not-found")


def test_status_lists_every_vip_with_its_state_and_the_plugin_prints_the_same_table(lab: Lab, views: None) -> None:
    def sick_failing() -> dict[str, dict[str, Any]] | None:
        rows = vip_rows(lab)
        return rows if rows.get("sick", {}).get("state") == "NoBackends" else None
    rows = wait_for(sick_failing, 60, "the sick Service's backends failing their check")
    ok = rows["ok"]
    assert (ok["pool"], ok["mode"], ok["ready"], ok["total"], ok["state"]) == ("views", "L2", 2, 2, "Serving")
    assert ok["addresses"][0].startswith("198.18.0.16") and len(ok["announcers"]) == 1
    assert (rows["full-b"]["state"], rows["full-b"]["problem"].split(":")[0]) == ("Pending", "PoolExhausted")
    assert (rows["outside"]["state"], rows["outside"]["problem"].split(":")[0]) == ("Pending",
                                                                                    "RequestedIPNotInAnyPool")
    assert (rows["empty"]["state"], rows["empty"]["total"]) == ("NoBackends", 0)
    assert rows["noif"]["state"] == "NotAnnounced"
    assert (rows["sick"]["healthy"], rows["sick"]["ready"]) == (0, 2)

    env = {**lab.env, "PATH": f"{Path(PORTICO).parent}{os.pathsep}{lab.env.get('PATH', os.environ['PATH'])}"}
    plugin = subprocess.run(["kubectl", "portico", "status", "-n", NS], capture_output=True, text=True, env=env,
                            timeout=60, check=False)
    assert plugin.returncode == 0, plugin.stderr
    lines = plugin.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "NAME", "KIND"]
    assert [line.split()[1] for line in lines[1:]] == sorted(SERVICES)
    nodes = run(lab, PORTICO, "status", "nodes")
    assert [line.split()[:2] for line in nodes.stdout.splitlines()[1:]] == [["node-1", "Ready"], ["node-2", "Ready"]]
    pools = run(lab, PORTICO, "status", "pools").stdout
    assert next(line for line in pools.splitlines() if line.startswith("views-full ")).split()[2] == "1/1"


def test_explain_a_healthy_service_walks_every_step(lab: Lab, views: None) -> None:
    code, text = explained(lab, "ok")
    assert code == 0, text
    assert text.rstrip().endswith("every step is in order")
    assert "standby" in text and "answers ARP/NDP" in text, text  # one node answers, the other waits


@pytest.mark.parametrize("case", [
    ("full-b", "address", "PoolExhausted: no free address left in views-full", "spec.addresses"),
    ("outside", "address", "RequestedIPNotInAnyPool: 198.18.201.1 is not in any IPPool", "inside an IPPool"),
    ("empty", "endpoints", "empty has no endpoints: no pod matches app=nothing", "selector"),
    ("noif", "announced", "NoEligibleNode", "spec.interfaces"),
    ("sick", "health", "0 of 2 endpoints pass their health check (TrafficPolicy sick)", "the check"),
], ids=lambda case: case[0])
def test_explain_names_the_broken_step_and_what_to_change(lab: Lab, views: None,
                                                          case: tuple[str, str, str, str]) -> None:
    name, step, says, fix = case
    def broken_at_step() -> tuple[int, str] | None:
        code, text = explained(lab, name)
        return (code, text) if f"first broken step: {step}" in text else None
    code, text = wait_for(broken_at_step, 60, f"explain naming {name}'s {step} step")
    assert code == 1
    line = next(line for line in text.splitlines() if line.lstrip().startswith(f"✘ {step}"))
    assert says in line, text
    assert fix in text, text
    if name == "noif":
        assert "interface eth9 does not exist on node-1" in text and "interface eth9 does not exist on node-2" in text


def test_explain_of_a_missing_object_and_a_bad_target_say_so(lab: Lab, views: None) -> None:
    code, text = explained(lab, "nope")
    assert code == 1 and f"no Service nope in namespace {NS}" in text
    bad = run(lab, PORTICO, "explain", "pod/x")
    assert bad.returncode == 2 and "expected service/NAME or gateway/NAME" in bad.stderr
