"""`portico status`: one row per VIP (a Service's or a Gateway's), per node, per pool (pure)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from portico.controller.node_reports import ANNOUNCED
from portico.controller.services import CONDITION as ADDRESS_ASSIGNED
from portico.ops import facts
from portico.ops.snapshot import Obj, Snapshot


@dataclass(frozen=True)
class VipRow:
    kind: str  # Service or Gateway
    namespace: str
    name: str
    addresses: list[str]
    pool: str | None
    mode: str  # L2, BGP, L2+BGP or -
    announcers: list[str]
    healthy: int | None  # None: no health monitor covers its backends
    ready: int
    total: int
    state: str  # Serving, Idle, Degraded, NoBackends, NotAnnounced, Pending
    problem: str  # why it is not Serving ('' when it is)
    packets_per_second: float | None = None  # clients' packets to its frontends, over every node (from Prometheus)


@dataclass(frozen=True)
class NodeRow:
    name: str
    agent: str  # Ready, NotReady or Missing
    heartbeat: str | None  # ADDRESS:PORT its peers hear it on
    layer2: int  # VIPs it answers ARP/NDP for
    bgp: int  # VIPs it advertises
    sessions: list[str]  # "PEER STATE", BGP (BFD in the message)
    unreachable: list[str]  # peers it does not hear
    unheard_by: list[str]  # peers that do not hear it
    problems: list[str]


@dataclass(frozen=True)
class PoolRow:
    name: str
    addresses: list[str]
    ipv4: str  # used/total
    ipv6: str
    auto_assign: bool
    ready: str  # the Ready condition's reason


def vips(snap: Snapshot, *, namespace: str | None = None, pool: str | None = None,
         packets_per_second: dict[str, float] | None = None) -> list[VipRow]:
    """`packets_per_second`: per Service (namespace/name), its frontends' rate — a Gateway's is its address
    Service's (none given: the column stays empty)."""
    rows = [_service_row(snap, svc) for svc in snap.services
            if facts.claimed(svc) and not facts.is_gateway_address(svc)]
    classes = facts.our_gateway_classes(snap)
    rows += [_gateway_row(snap, gw) for gw in snap.gateways if (gw.get("spec") or {}).get("gatewayClassName")
             in classes]
    if packets_per_second is not None:
        rows = [dataclasses.replace(r, packets_per_second=packets_per_second.get(_traffic_key(snap, r), 0.0))
                for r in rows]
    return sorted((r for r in rows if (namespace is None or r.namespace == namespace)
                   and (pool is None or r.pool == pool)), key=lambda r: (r.namespace, r.name, r.kind))


def _traffic_key(snap: Snapshot, row: VipRow) -> str:
    """The Service whose frontends carry the row's traffic (a Gateway's: its address Service)."""
    if row.kind == "Gateway" and (gw := facts.find(snap.gateways, row.namespace, row.name)) and (
            svc := facts.gateway_address_service(snap, gw)):
        return facts.key(svc)
    return f"{row.namespace}/{row.name}"


def _service_row(snap: Snapshot, svc: Obj) -> VipRow:
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    l7 = facts.l7_backends(snap, svc)  # the Ingress address: HAProxy serves it, from the Ingresses' Services
    kind = "Ingress" if facts.is_ingress_address(svc) else "Service"
    row = _row(snap, kind, svc, ns, name, **_backends(snap, sorted(l7) if l7 is not None else [(ns, name)]))
    return _idle(row) if l7 == set() else row


def _idle(row: VipRow) -> VipRow:
    """An address for routes (a Gateway's, the Ingress one) that no route uses yet: nothing to serve, nothing wrong."""
    if row.state != "NoBackends":
        return row
    return dataclasses.replace(row, state="Idle", problem="no route sends requests through it yet")


def _gateway_row(snap: Snapshot, gw: Obj) -> VipRow:
    ns, name = gw["metadata"]["namespace"], gw["metadata"]["name"]
    svc = facts.gateway_address_service(snap, gw)
    backends = facts.gateway_backends(snap, gw)
    row = _row(snap, "Gateway", svc or {"metadata": {}}, ns, name, **_backends(snap, sorted(backends)))
    row = row if backends else _idle(row)
    programmed = facts.condition(gw, "Programmed")
    if row.state == "Serving" and (programmed is None or programmed.get("status") != "True"):
        why = programmed.get("message", "") if programmed else "the controller has not programmed it"
        return dataclasses.replace(row, state="Pending", problem=f"Programmed: {why}")
    return row


def _backends(snap: Snapshot, backends: list[tuple[str, str]]) -> dict[str, Any]:
    """healthy (None while no monitor covers them), ready and total endpoints of these (namespace, Service)."""
    eps = [e for ns, name in backends for e in facts.endpoints(snap, ns, name)]
    monitored = [h for ns, name in backends if (h := facts.health(snap, f"{ns}/{name}"))]
    return {"healthy": sum(h[0] for h in monitored) if monitored else None, "ready": len(facts.serving(eps)),
            "total": len(eps)}


def _row(snap: Snapshot, kind: str, svc: Obj, ns: str, name: str, *, healthy: int | None, ready: int,
         total: int) -> VipRow:
    addresses = facts.addresses(svc)
    pool = facts.pool_of(snap, svc) if svc.get("metadata") else None
    announcers = sorted({n for a in addresses for n in [*facts.announcers(snap, a)[0], *facts.announcers(snap, a)[1]]})
    state, problem = _state(svc, addresses, healthy, ready)
    return VipRow(kind, ns, name, addresses, pool, facts.mode(snap, svc, pool), announcers, healthy, ready, total,
                  state, problem)


def _state(svc: Obj, addresses: list[str], healthy: int | None, ready: int) -> tuple[str, str]:
    assigned = facts.condition(svc, ADDRESS_ASSIGNED)
    if not addresses:
        if assigned is None:
            return "Pending", "no address yet: the controller has not answered (is it running?)"
        return "Pending", f"{assigned.get('reason')}: {assigned.get('message')}"
    announced = facts.condition(svc, ANNOUNCED)
    if announced is None or announced.get("status") != "True":
        why = f"{announced.get('reason')}: {announced.get('message')}" if announced else "no node announces it yet"
        return "NotAnnounced", why
    if ready == 0:
        return "NoBackends", "no ready endpoint"
    if healthy == 0:
        return "NoBackends", "no endpoint passes its health check"
    if problem := facts.forwarding_problem(svc):
        return "Degraded", problem
    if assigned is not None and assigned.get("status") == "False":
        return "Degraded", f"{assigned.get('reason')}: {assigned.get('message')}"
    if healthy is not None and healthy < ready:
        return "Degraded", f"{ready - healthy} of {ready} endpoints fail their health check"
    return "Serving", ""


def nodes(snap: Snapshot) -> list[NodeRow]:
    reports = {r["metadata"]["name"]: r.get("status") or {} for r in snap.portico_nodes}
    rows = []
    for node in sorted(n["metadata"]["name"] for n in snap.nodes):
        status = reports.get(node, {})
        ready = facts.agent_ready(snap, node)
        beat = status.get("heartbeat")
        address = beat and (f"[{beat['address']}]" if ":" in beat["address"] else beat["address"])
        rows.append(NodeRow(
            node, "Missing" if ready is None else "Ready" if ready else "NotReady",
            f"{address}:{beat['port']}" if beat else None, len(status.get("layer2") or []),
            len(status.get("bgp") or []),
            [f"{s.get('peer')} {s.get('state')}" for s in status.get("bgpSessions") or []],
            list(status.get("unreachable") or []), facts.unheard_by(snap, node),
            [f"{p.get('service')}: {p.get('message')}" for p in status.get("forwardingProblems") or []]
            + [f"{p.get('advertisement')}: {p.get('message')}" for p in status.get("l2Problems") or []]))
    return rows


def pools(snap: Snapshot) -> list[PoolRow]:
    rows = []
    for pool in sorted(snap.pools, key=lambda p: p["metadata"]["name"]):
        spec, status = pool.get("spec") or {}, pool.get("status") or {}
        ready = facts.condition(pool, "Ready")

        def usage(family: str, status: Obj = status) -> str:
            u = status.get(family)
            return f"{u['used']}/{u['total']}" if u else "-"
        rows.append(PoolRow(pool["metadata"]["name"], list(spec.get("addresses") or []), usage("ipv4"),
                            usage("ipv6"), spec.get("autoAssign", True), ready.get("reason", "-") if ready else "-"))
    return rows
