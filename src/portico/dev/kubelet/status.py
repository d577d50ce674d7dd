"""Pod status from the lab runtime's view of its containers (pure), in the kubelet's vocabulary."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def timestamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Termination:
    exit_code: int
    reason: str  # Completed, Error, OOMKilled...
    started_at: dt.datetime
    finished_at: dt.datetime


@dataclass
class ContainerRuntimeState:
    name: str
    image: str
    running_since: dt.datetime | None = None
    ready: bool = False
    restart_count: int = 0
    waiting_reason: str | None = "ContainerCreating"
    waiting_message: str | None = None
    last_termination: Termination | None = None
    terminated: Termination | None = None  # final: will not be restarted
    started_ever: bool = False
    image_id: str = ""  # the image's digest once pulled (lab built-ins have none)


def _termination(t: Termination) -> dict[str, Any]:
    return {"terminated": {"exitCode": t.exit_code, "reason": t.reason, "startedAt": timestamp(t.started_at),
                           "finishedAt": timestamp(t.finished_at)}}


def container_status(c: ContainerRuntimeState) -> dict[str, Any]:
    if c.terminated is not None:
        state = _termination(c.terminated)
    elif c.running_since is not None:
        state = {"running": {"startedAt": timestamp(c.running_since)}}
    else:
        waiting = {"reason": c.waiting_reason or "ContainerCreating"}
        if c.waiting_message:
            waiting["message"] = c.waiting_message
        state = {"waiting": waiting}
    status: dict[str, Any] = {
        "name": c.name, "image": c.image, "imageID": c.image_id, "ready": c.ready, "restartCount": c.restart_count,
        "started": c.running_since is not None, "state": state,
    }
    if c.last_termination is not None:
        status["lastState"] = _termination(c.last_termination)
    return status


def pod_phase(containers: list[ContainerRuntimeState]) -> str:
    if containers and all(c.terminated is not None for c in containers):
        return "Succeeded" if all(c.terminated and c.terminated.exit_code == 0 for c in containers) else "Failed"
    if any(c.started_ever for c in containers):
        return "Running"
    return "Pending"


KUBELET_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


def readiness_gates(kinds: Sequence[str], conditions: Sequence[dict[str, Any]]) -> dict[str, str | None]:
    """Each readiness gate's condition type and that condition's status (None: not set yet)."""
    status = {c.get("type"): c.get("status") for c in conditions}
    return {kind: status.get(kind) for kind in kinds}


def _gates_problem(gates: dict[str, str | None]) -> str | None:
    """The Ready condition's message when a readiness gate holds the pod back, in the kubelet's words."""
    for kind, status in gates.items():
        if status is None:
            return f'corresponding condition of pod readiness gate "{kind}" does not exist.'
        if status != "True":
            return f'the status of pod readiness gate "{kind}" is not "True", but {status}'
    return None


def pod_status(containers: list[ContainerRuntimeState], *, pod_ips: list[str], host_ips: list[str],
               start_time: dt.datetime, transition_times: dict[str, dt.datetime],
               gates: Sequence[str] = (), foreign: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The `status` of a pod bound to a lab node. `transition_times` remembers when each condition
    last changed (updated in place), so lastTransitionTime moves only on a real transition. A pod is Ready
    when its containers are and the condition each readiness gate names (`gates`) is True; `foreign`
    conditions (the pod's as the API has them: those others set, such as the gates', are kept as a kubelet
    keeps them)."""
    containers_ready = bool(containers) and all(c.ready for c in containers)
    gated = _gates_problem(readiness_gates(gates, foreign)) if containers_ready else None
    phase = pod_phase(containers)
    values = {"PodScheduled": True, "Initialized": True, "ContainersReady": containers_ready,
              "Ready": containers_ready and gated is None}
    conditions = []
    for kind, value in values.items():
        key = f"{kind}={value}"
        if key not in transition_times:
            for stale in [k for k in transition_times if k.startswith(kind + "=")]:
                del transition_times[stale]
            transition_times[key] = dt.datetime.now(dt.UTC)
        condition = {"type": kind, "status": "True" if value else "False",
                     "lastTransitionTime": timestamp(transition_times[key])}
        if kind == "Ready" and gated is not None:
            condition |= {"reason": "ReadinessGatesNotReady", "message": gated}
        conditions.append(condition)
    conditions += [c for c in foreign if c.get("type") not in KUBELET_CONDITIONS]
    return {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ips[0], "hostIPs": [{"ip": ip} for ip in host_ips],
        "podIP": pod_ips[0] if pod_ips else None, "podIPs": [{"ip": ip} for ip in pod_ips],
        "startTime": timestamp(start_time),
        "containerStatuses": [container_status(c) for c in containers],
    }
