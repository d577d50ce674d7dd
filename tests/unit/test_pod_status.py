from __future__ import annotations

import datetime as dt
from typing import Any

from portico.dev.kubelet.status import ContainerRuntimeState, Termination, pod_phase, pod_status

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_pending_until_started_then_ready_follows_containers() -> None:
    c = ContainerRuntimeState(name="app", image="portico.dev/echo")
    times: dict[str, dt.datetime] = {}
    status = pod_status([c], pod_ips=["198.19.1.2"], host_ips=["198.18.0.11"], start_time=T0,
                        transition_times=times)
    assert status["phase"] == "Pending"
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    c.running_since, c.started_ever, c.waiting_reason = T0, True, None
    status = pod_status([c], pod_ips=["198.19.1.2"], host_ips=["198.18.0.11"], start_time=T0,
                        transition_times=times)
    ready = {cond["type"]: cond["status"] for cond in status["conditions"]}
    assert status["phase"] == "Running" and ready["Ready"] == "False"
    first_transition = times["Ready=False"]
    c.ready = True
    status = pod_status([c], pod_ips=["198.19.1.2"], host_ips=["198.18.0.11"], start_time=T0,
                        transition_times=times)
    assert {cond["type"]: cond["status"] for cond in status["conditions"]}["Ready"] == "True"
    assert "Ready=False" not in times and times["Ready=True"] >= first_transition
    assert status["podIPs"] == [{"ip": "198.19.1.2"}]


def test_terminal_phases() -> None:
    ok = Termination(0, "Completed", T0, T0)
    bad = Termination(1, "Error", T0, T0)
    done = ContainerRuntimeState(name="a", image="i", terminated=ok, started_ever=True)
    failed = ContainerRuntimeState(name="b", image="i", terminated=bad, started_ever=True)
    assert pod_phase([done]) == "Succeeded"
    assert pod_phase([done, failed]) == "Failed"
    running = ContainerRuntimeState(name="c", image="i", running_since=T0, started_ever=True)
    assert pod_phase([done, running]) == "Running"


def test_a_readiness_gate_holds_ready_back_until_its_condition_is_true() -> None:
    c = ContainerRuntimeState(name="app", image="portico.dev/echo", running_since=T0, started_ever=True, ready=True)
    times: dict[str, dt.datetime] = {}

    def conditions(foreign: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        status = pod_status([c], pod_ips=["198.19.1.2"], host_ips=["198.18.0.11"], start_time=T0,
                            transition_times=times, gates=["portico.io/programmed"], foreign=foreign)
        return {cond["type"]: cond for cond in status["conditions"]}
    missing = conditions([])
    assert missing["ContainersReady"]["status"] == "True" and missing["Ready"]["status"] == "False"
    assert missing["Ready"]["reason"] == "ReadinessGatesNotReady"
    assert missing["Ready"]["message"] == 'corresponding condition of pod readiness gate "portico.io/programmed" ' \
                                          "does not exist."
    gate = {"type": "portico.io/programmed", "status": "False"}
    held = conditions([gate, {"type": "Ready", "status": "True"}])
    assert "but False" in held["Ready"]["message"] and held["portico.io/programmed"] == gate  # kept, not ours
    passed = conditions([{**gate, "status": "True"}])
    assert passed["Ready"]["status"] == "True" and "reason" not in passed["Ready"]
    assert passed["portico.io/programmed"]["status"] == "True"
