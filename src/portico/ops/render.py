"""Rows as kubectl prints them: a table (`-o wide` adds columns), or JSON/YAML of every field (pure)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from portico.ops.status import NodeRow, PoolRow, VipRow

Column = tuple[str, Callable[[Any], str], bool]  # header, cell, shown only with -o wide


def _listed(values: Sequence[str]) -> str:
    return ",".join(values) if values else "-"


def _backends(row: VipRow) -> str:
    return f"{'-' if row.healthy is None else row.healthy}/{row.ready}/{row.total}"


VIP_COLUMNS: list[Column] = [
    ("NAMESPACE", lambda r: r.namespace, False), ("NAME", lambda r: r.name, False),
    ("KIND", lambda r: r.kind, False), ("ADDRESS", lambda r: _listed(r.addresses), False),
    ("POOL", lambda r: r.pool or "-", False), ("MODE", lambda r: r.mode, False),
    ("ANNOUNCED-BY", lambda r: _listed(r.announcers), False),
    ("BACKENDS(HEALTHY/READY/TOTAL)", _backends, False),
    ("PKTS/S", lambda r: "-" if r.packets_per_second is None else f"{r.packets_per_second:.0f}", False),
    ("STATE", lambda r: r.state, False),
    ("PROBLEM", lambda r: r.problem or "-", True),
]
NODE_COLUMNS: list[Column] = [
    ("NODE", lambda r: r.name, False), ("AGENT", lambda r: r.agent, False),
    ("HEARTBEAT", lambda r: r.heartbeat or "-", False), ("L2", lambda r: str(r.layer2), False),
    ("BGP", lambda r: str(r.bgp), False), ("SESSIONS", lambda r: _listed(r.sessions), False),
    ("UNREACHABLE", lambda r: _listed(r.unreachable), False),
    ("UNHEARD-BY", lambda r: _listed(r.unheard_by), True),
    ("PROBLEMS", lambda r: str(len(r.problems)), False), ("DETAILS", lambda r: "; ".join(r.problems) or "-", True),
]
POOL_COLUMNS: list[Column] = [
    ("NAME", lambda r: r.name, False), ("ADDRESSES", lambda r: _listed(r.addresses), False),
    ("IPV4(USED/TOTAL)", lambda r: r.ipv4, False), ("IPV6(USED/TOTAL)", lambda r: r.ipv6, False),
    ("AUTO-ASSIGN", lambda r: str(r.auto_assign).lower(), False), ("READY", lambda r: r.ready, False),
]
COLUMNS: dict[type[Any], list[Column]] = {VipRow: VIP_COLUMNS, NodeRow: NODE_COLUMNS, PoolRow: POOL_COLUMNS}


def table(rows: Sequence[Any], columns: list[Column], *, wide: bool = False) -> str:
    shown = [c for c in columns if wide or not c[2]]
    cells = [[c[0] for c in shown], *([c[1](r) for c in shown] for r in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(shown))]
    return "\n".join("   ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def output(rows: Sequence[Any], kind: type[Any], fmt: str) -> str:
    """fmt: '' (a table), wide, json or yaml."""
    if fmt in ("json", "yaml"):
        data = {"kind": "List", "items": [dataclasses.asdict(r) for r in rows]}
        return json.dumps(data, indent=2) if fmt == "json" else yaml.safe_dump(data, sort_keys=False).rstrip()
    if not rows:
        return "nothing found"
    return table(rows, COLUMNS[kind], wide=fmt == "wide")
