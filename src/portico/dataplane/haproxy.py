"""The L7 model (portico.dataplane.l7model) as HAProxy's configuration (pure).

Layout, chosen for what changes without a reload:
* one `frontend` per bound VIP:port (`transparent`: the VIP is on no interface; docs/gateway-api.md), its route
  matches as named ACLs (`acl` lines of one name are ORed: a segment-aware path prefix is `str P` or `beg P/`),
  tried in the model's order, then 404 as the spec asks when nothing matches;
* one `backend` per pool (a Service port), named stably, with its servers padded to a power-of-two of slots so
  endpoint changes are runtime-API `set server addr` / `enable server` on existing slots;
* a rule's weighted backendRefs split by one random number per request (`txn.pick`, cumulative thresholds out of
  PICK_SCALE); an unresolved backendRef's share goes to a backend answering 500.
"""

from __future__ import annotations

import ipaddress

from portico.api.gateway import HTTPNameValueMatch, HTTPRouteMatch
from portico.dataplane.l7model import L7Config, L7Listener, Pool, RouteEntry

PICK_SCALE = 1_000_000
MIN_SLOTS = 8
NOT_FOUND, UNRESOLVED = "portico_404", "portico_500"
GLOBAL = """global
  stats socket {runtime_socket} mode 600 level admin expose-fd listeners
  hard-stop-after 30s

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
"""


def quote(value: str) -> str:
    """A word HAProxy's parser reads back verbatim: single-quoted, a quote inside closed, escaped and reopened."""
    return "'" + value.replace("'", "'\\''") + "'"


def address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"ipv{ip.version}@{ip}:{port}"


def slots(count: int) -> int:
    """Server slots of a pool: the next power of two, at least MIN_SLOTS (room to grow without a reload)."""
    n = MIN_SLOTS
    while n < count:
        n *= 2
    return n


def _value_acl(name: str, fetch: str, m: HTTPNameValueMatch) -> str:
    return f"  acl {name} {fetch}({m.name}) -m {'reg' if m.type == 'RegularExpression' else 'str'} {quote(m.value)}"


def _match_acls(prefix: str, hostnames: tuple[str, ...], match: HTTPRouteMatch) -> tuple[list[str], list[str]]:
    """The `acl` lines of one route match and the names its condition ANDs."""
    lines: list[str] = []
    names: list[str] = []
    hosts = [h for h in hostnames if h]
    if hosts:
        for h in hosts:
            how = f"-m end {quote(h[1:])}" if h.startswith("*.") else f"-m str {quote(h)}"
            lines.append(f"  acl {prefix}_host req.hdr(host),field(1,:),lower {how}")
        names.append(f"{prefix}_host")
    path = match.path
    if path.type == "Exact":
        lines.append(f"  acl {prefix}_path path -m str {quote(path.value)}")
    elif path.type == "RegularExpression":
        lines.append(f"  acl {prefix}_path path -m reg {quote(path.value)}")
    elif path.value.rstrip("/"):
        stem = path.value.rstrip("/")
        lines += [f"  acl {prefix}_path path -m str {quote(stem)}",
                  f"  acl {prefix}_path path -m beg {quote(stem + '/')}"]
    if any(line.startswith(f"  acl {prefix}_path ") for line in lines):
        names.append(f"{prefix}_path")
    if match.method:
        lines.append(f"  acl {prefix}_method method {match.method}")
        names.append(f"{prefix}_method")
    for j, header in enumerate(match.headers):
        lines.append(_value_acl(f"{prefix}_h{j}", "req.hdr", header))
        names.append(f"{prefix}_h{j}")
    for j, param in enumerate(match.queryParams):
        lines.append(_value_acl(f"{prefix}_q{j}", "url_param", param))
        names.append(f"{prefix}_q{j}")
    return lines, names


def _entry(prefix: str, entry: RouteEntry) -> list[str]:
    acls, names = _match_acls(prefix, entry.hostnames, entry.match)
    weighted = [b for b in entry.backends if b.weight > 0]
    total = sum(b.weight for b in weighted)

    def use(target: str, *terms: str) -> str:
        condition = " ".join([*names, *terms])
        return f"  use_backend {target}" + (f" if {condition}" if condition else "")

    if total == 0:  # no backend (or all weight 0): the spec's 500
        return [*acls, use(UNRESOLVED)]
    uses, cumulative = [], 0
    for b in weighted:
        cumulative += b.weight
        pick = [] if cumulative == total else [f"{{ var(txn.pick) -m int lt {cumulative * PICK_SCALE // total} }}"]
        uses.append(use(b.pool or UNRESOLVED, *pick))
    return [*acls, *uses]


def _frontend(index: int, listener: L7Listener) -> list[str]:
    bind = f"  bind {address(listener.address, listener.port)} transparent"
    if listener.protocol == "HTTPS":
        bind += " ssl " + " ".join(f"crt {quote(c)}" for c in listener.certificates) + " alpn h2,http/1.1"
    lines = [f"frontend l{index}_{listener.port}", bind, f"  http-request set-var(txn.pick) rand({PICK_SCALE})"]
    for i, entry in enumerate(listener.entries):
        lines += _entry(f"e{i}", entry)
    lines.append(f"  default_backend {NOT_FOUND}")
    return lines


def _backend(pool: Pool) -> list[str]:
    lines = [f"backend {pool.name}", "  balance roundrobin"]
    for i in range(slots(len(pool.endpoints))):
        if i < len(pool.endpoints):
            ep = pool.endpoints[i]
            lines.append(f"  server s{i} {address(ep.address, ep.port)}")
        else:
            lines.append(f"  server s{i} ipv4@0.0.0.0:1 disabled")
    return lines


def render(config: L7Config, *, runtime_socket: str) -> str:
    """The whole configuration. No global maxconn: HAProxy sizes it from the process's file-descriptor limit."""
    out = [GLOBAL.format(runtime_socket=runtime_socket)]
    for i, listener in enumerate(config.listeners):
        out.append("\n".join(_frontend(i, listener)) + "\n")
    for pool in config.pools:
        out.append("\n".join(_backend(pool)) + "\n")
    out.append(f"backend {NOT_FOUND}\n  http-request return status 404\n")
    out.append(f"backend {UNRESOLVED}\n  http-request return status 500\n")
    return "\n".join(out)
