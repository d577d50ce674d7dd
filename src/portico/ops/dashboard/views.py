"""The dashboard's pages as JSON documents, from a Snapshot and what Prometheus said (pure): the overview (pools,
VIPs by state, alerts), one VIP (its backends with readiness and health, who announces it, the explain walk, recent
events, a traffic series), and the nodes."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from portico.ops import facts, status
from portico.ops.explain import explain
from portico.ops.snapshot import Snapshot

STATES = ("Serving", "Idle", "Degraded", "NoBackends", "NotAnnounced", "Pending")  # best first


def overview(snap: Snapshot, alerts: list[dict[str, Any]] | None) -> dict[str, Any]:
    vips = status.vips(snap)
    pools = []
    for row, pool in zip(status.pools(snap), sorted(snap.pools, key=lambda p: p["metadata"]["name"]), strict=True):
        usage = [{"family": family, "used": u["used"], "total": u["total"],
                  "percent": round(100 * u["used"] / u["total"], 1) if u["total"] else 0.0}
                 for family in ("ipv4", "ipv6") if (u := (pool.get("status") or {}).get(family))]
        pools.append({"name": row.name, "addresses": row.addresses, "usage": usage, "ready": row.ready})
    counts = Counter(v.state for v in vips)
    return {
        "pools": pools,
        "vips": [dataclasses.asdict(v) for v in vips],
        "states": [{"state": s, "count": counts.get(s, 0)} for s in STATES],
        "alerts": _alerts(alerts),
        "problems": [f"{v.kind} {v.namespace}/{v.name}: {v.state}: {v.problem}" for v in vips if v.problem],
    }


def _alerts(alerts: list[dict[str, Any]] | None) -> list[dict[str, str]] | None:
    """Prometheus's pending and firing alerts; None when no Prometheus is configured."""
    if alerts is None:
        return None
    return sorted(({"name": a["labels"].get("alertname", ""), "state": a.get("state", ""),
                    "severity": a["labels"].get("severity", ""),
                    "summary": (a.get("annotations") or {}).get("summary", "")} for a in alerts),
                  key=lambda a: (a["state"] != "firing", a["name"], a["summary"]))


def vip(snap: Snapshot, kind: str, namespace: str, name: str, *, backend_up: dict[str, float] | None,
        traffic: list[tuple[float, float]] | None) -> dict[str, Any] | None:
    """`backend_up`: per endpoint address, 1 or 0 as the node monitoring it last said (None: no Prometheus)."""
    row = next((r for r in status.vips(snap, namespace=namespace) if r.name == name and r.kind.lower() == kind),
               None)
    if row is None:
        return None
    explanation = explain(snap, kind, namespace, name)
    endpoints = []
    for backend in backend_services(snap, kind, namespace, name):
        for e in facts.endpoints(snap, namespace, backend):
            up = (backend_up or {}).get(e.address)
            endpoints.append({"service": backend, "address": e.address, "pod": e.pod, "node": e.node,
                              "state": "terminating" if e.terminating else "ready" if e.ready else "not ready",
                              "health": None if up is None else "up" if up else "down"})
    names = {name}  # whose Events: the object's, and a Gateway's address Service's (the agents record on it)
    if kind == "gateway" and (gw := facts.find(snap.gateways, namespace, name)) and (
            address := facts.gateway_address_service(snap, gw)):
        names.add(address["metadata"]["name"])
    events = sorted((e for e in snap.events if (e.get("involvedObject") or {}).get("namespace") == namespace
                     and (e.get("involvedObject") or {}).get("name") in names), key=_when)[-15:]
    return {
        "row": dataclasses.asdict(row),
        "endpoints": endpoints,
        "steps": [dataclasses.asdict(s) for s in explanation.steps],
        "events": [{"time": _when(e), "type": e.get("type"), "reason": e.get("reason"), "message": e.get("message")}
                   for e in reversed(events)],
        "traffic": traffic,
    }


def backend_services(snap: Snapshot, kind: str, namespace: str, name: str) -> list[str]:
    if kind == "gateway":
        gateway = facts.find(snap.gateways, namespace, name)
        return sorted({b for r in facts.routes_of(snap, gateway) for b_ns, b in facts.route_backends(r)
                       if b_ns == namespace}) if gateway else []
    return [name]


def _when(event: dict[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp"))


def nodes(snap: Snapshot, sync_p99: dict[str, float] | None) -> dict[str, Any]:
    """`sync_p99`: per node, the 99th percentile of its rule syncs over the last minutes (seconds)."""
    return {"nodes": [{**dataclasses.asdict(r), "syncP99Seconds": (sync_p99 or {}).get(r.name)}
                      for r in status.nodes(snap)]}


def endpoint_address(label: str) -> str:
    """portico_backend_up's `endpoint` label (`IP:PORT`, `[IPv6]:PORT` or `IP`) -> the address."""
    if label.startswith("["):
        return label[1:].split("]", 1)[0]
    return label.rsplit(":", 1)[0] if label.count(":") == 1 else label
