"""The L7 model (portico.dataplane.l7model) as HAProxy's configuration (pure).

Layout, chosen for what changes without a reload:
* one `frontend` per bound VIP:port (`transparent`: the VIP is on no interface; docs/gateway-api.md). A request
  is matched first, on what it arrived with: each route match is a set of named ACLs (`acl` lines of one name are
  ORed: a segment-aware path prefix is `str P` or `beg P/`), tried in the model's order, the first that holds
  stored in `txn.e`. Then the matched entry's filters run (header edits, rewrites, a redirect answered by HAProxy
  itself), then `use_backend` on `txn.e`; 404 as the spec asks when nothing matched;
* one `backend` per pool (a Service port), named stably, with its servers padded to a power-of-two of slots so
  endpoint changes are runtime-API `set server addr` / `enable server` on existing slots;
* a rule's weighted backendRefs split by one random number per request (`txn.pick`, each backendRef a range of
  PICK_SCALE), which also selects a backendRef's own filters; an unresolved backendRef's share goes to a backend
  answering 500.
"""

from __future__ import annotations

import ipaddress

from portico.api.gateway import HTTPNameValueMatch, HTTPRouteMatch
from portico.dataplane.l7model import (
    ClientPersistence,
    CookiePersistence,
    HeaderEdits,
    L7Config,
    L7Listener,
    NewPath,
    Pool,
    Redirect,
    RouteEntry,
    WeightedPool,
)

PICK_SCALE = 1_000_000
MIN_SLOTS = 8
TABLE_SIZE = "100k"  # client addresses a stick table holds (persistence, request rates); the oldest go first
NOT_FOUND, UNRESOLVED = "portico_404", "portico_500"
WELL_KNOWN_PORTS = {"http": 80, "https": 443}
# `idle-close-on-response`: a reload's old worker keeps each idle keep-alive connection until its next request and
# closes it after that response (`Connection: close`), never while idle — by default HAProxy closes idle ones at
# once on a reload, and a request the client sent at that moment fails (measured: 11-12 of ~290k requests over 10
# reloads; `grace 1s` before it only moved that moment a second later: 4 of 338,807 in a churn run).
# `forwardfor`: the backend learns the client's address from X-Forwarded-For (and its scheme from X-Forwarded-Proto,
# set in each frontend), as every ingress controller tells it.
GLOBAL = """global
  stats socket {runtime_socket} mode 600 level admin expose-fd listeners
  hard-stop-after 30s
{log}
defaults
  mode http
  option http-keep-alive
  option idle-close-on-response
  option forwardfor
{log_defaults}  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
"""
# A rule's timeout (milliseconds, set by the frontend that matched it): HAProxy sets a server timeout in a backend.
RESPONSE_TIMEOUT = "  http-request set-timeout server var(txn.timeout) if { var(txn.timeout) -m found }"
# The request's host without its port ("[v6]:port" keeps its brackets), lower-cased: what hostnames match.
REQUEST_HOST = "  http-request set-var(txn.host) req.hdr(host),regsub(:[0-9]*$,),lower"
FORWARDED_PROTO = "  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]"
# Access logs: one line per request in HAProxy's HTTP format, on the worker's stdout, which is the agent's (so
# `kubectl logs` shows them): a writev() per line; one that cannot be written is dropped (counted in `show info`'s
# DroppedLogs), never waited for.
ACCESS_LOG, ACCESS_LOG_DEFAULTS = "  log stdout format raw daemon\n", "  log global\n  option httplog\n"


def quote(value: str) -> str:
    """A word HAProxy's parser reads back verbatim: single-quoted, a quote inside closed, escaped and reopened."""
    return "'" + value.replace("'", "'\\''") + "'"


def log_format_text(value: str) -> str:
    """Text in a log-format string (header values, paths, redirect locations): `%` doubled, the rest as is."""
    return value.replace("%", "%%")


def literal(value: str) -> str:
    """A word HAProxy reads as a log-format string that is this text."""
    return quote(log_format_text(value))


def address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"ipv{ip.version}@{ip}:{port}"


def slots(count: int) -> int:
    """Server slots of a pool: the next power of two, at least MIN_SLOTS (room to grow without a reload)."""
    n = MIN_SLOTS
    while n < count:
        n *= 2
    return n


def redirect_port(redirect: Redirect, scheme: str, listener_port: int) -> int | None:
    """The spec's port of a redirect: the one asked for; else the scheme's well-known port when a scheme is asked
    for; else the listener's. None when it is the scheme's own, which a Location does not spell out."""
    if redirect.port is not None:
        port = redirect.port
    elif redirect.scheme is not None:
        port = WELL_KNOWN_PORTS.get(redirect.scheme, listener_port)
    else:
        port = listener_port
    return None if WELL_KNOWN_PORTS.get(scheme) == port else port


def _host_acl(name: str, hostname: str) -> str:
    how = f"-m end {quote(hostname[1:])}" if hostname.startswith("*.") else f"-m str {quote(hostname)}"
    return f"  acl {name} var(txn.host) {how}"


def _value_acl(name: str, fetch: str, m: HTTPNameValueMatch) -> str:
    return f"  acl {name} {fetch}({m.name}) -m {'reg' if m.type == 'RegularExpression' else 'str'} {quote(m.value)}"


def _match_acls(prefix: str, hostnames: tuple[str, ...], match: HTTPRouteMatch) -> tuple[list[str], list[str]]:
    """The `acl` lines of one route match and the names its condition ANDs."""
    lines: list[str] = []
    names: list[str] = []
    hosts = [h for h in hostnames if h]
    if hosts:
        lines += [_host_acl(f"{prefix}_host", h) for h in hosts]
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


def _when(*terms: str) -> str:
    condition = " ".join(t for t in terms if t)
    return f" if {condition}" if condition else ""


def _header_edits(directive: str, edits: HeaderEdits, condition: str) -> list[str]:
    return ([f"  {directive} set-header {quote(n)} {literal(v)}{condition}" for n, v in edits.set]
            + [f"  {directive} add-header {quote(n)} {literal(v)}{condition}" for n, v in edits.add]
            + [f"  {directive} del-header {quote(n)}{condition}" for n in edits.remove])


def _new_path(new: NewPath, match: HTTPRouteMatch, condition: str) -> list[str]:
    """`txn.path`: the path a rewrite or redirect gives. A prefix replaced: the rest of the path after the matched
    prefix (`bytes`, no regular expression to escape) joins the replacement with one slash between."""
    if not new.replace_prefix:
        return [f"  http-request set-var-fmt(txn.path) {literal(new.value)}{condition}"]
    stem = match.path.value.rstrip("/")
    return [f"  http-request set-var(txn.rest) path,bytes({len(stem)}){condition}",
            f"  http-request set-var-fmt(txn.path) {literal(new.value or '/')}{condition}",
            f"  http-request set-var-fmt(txn.path) {literal(new.value.rstrip('/'))}%[var(txn.rest)]{condition}"
            " { var(txn.rest) -m len 1: }"]


def _redirect(redirect: Redirect, match: HTTPRouteMatch, listener: L7Listener, condition: str) -> list[str]:
    scheme = redirect.scheme or listener.protocol.lower()
    port = redirect_port(redirect, scheme, listener.port)
    host = log_format_text(redirect.hostname) if redirect.hostname else "%[var(txn.host)]"
    lines = [f"  http-request set-var-fmt(txn.query) ?%[query]{condition} {{ query -m found }}"]
    if redirect.path is not None:
        lines += _new_path(redirect.path, match, condition)
    path = "%[var(txn.path)]" if redirect.path is not None else "%[path]"
    location = f"{scheme}://{host}{f':{port}' if port else ''}{path}%[var(txn.query)]"
    return [*lines, f"  http-request redirect location {quote(location)} code {redirect.status}{condition}"]


def _ranges(backends: tuple[WeightedPool, ...]) -> list[tuple[WeightedPool, str]]:
    """The backendRefs a request can be sent to, each with the condition on `txn.pick` that picks it."""
    weighted = [b for b in backends if b.weight > 0]
    total = sum(b.weight for b in weighted)
    out, cumulative = [], 0
    for b in weighted:
        low = cumulative * PICK_SCALE // total
        cumulative += b.weight
        high = cumulative * PICK_SCALE // total - 1
        out.append((b, "" if len(weighted) == 1 else f"{{ var(txn.pick) -m int {low}:{high} }}"))
    return out


def _filters(entry: RouteEntry, listener: L7Listener, matched: str,
             picks: list[tuple[WeightedPool, str]]) -> tuple[list[str], list[str]]:
    """The http-request and http-response rules of one entry's filters and timeout, then its backendRefs' own."""
    filters, when = entry.filters, _when(matched)
    request = _header_edits("http-request", filters.request_headers, when)
    if entry.response_timeout_ms is not None:  # applied by the backend (RESPONSE_TIMEOUT); past it, a 504
        request.append(f"  http-request set-var(txn.timeout) int({entry.response_timeout_ms}){when}")
    response = _header_edits("http-response", filters.response_headers, when)
    if filters.rewrite is not None:
        if filters.rewrite.hostname:
            request.append(f"  http-request set-header host {literal(filters.rewrite.hostname)}{when}")
        if filters.rewrite.path is not None:
            request += _new_path(filters.rewrite.path, entry.match, when)
            request.append(f"  http-request set-path %[var(txn.path)]{when}")
    if filters.redirect is not None:
        request += _redirect(filters.redirect, entry.match, listener, when)
    for backend, picked in picks:
        request += _header_edits("http-request", backend.filters.request_headers, _when(matched, picked))
        response += _header_edits("http-response", backend.filters.response_headers, _when(matched, picked))
    return request, response


def _isolation(hostnames: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Where Gateway listeners share the port: `txn.l`, the first (most specific) whose hostname the request's
    host matches — its acl and http-request lines."""
    if len(hostnames) < 2:
        return [], []
    acls = [_host_acl(f"l{k}_host", h) for k, h in enumerate(hostnames) if h]
    selects = [f"  http-request set-var(txn.l) int({k})"
               + _when("!{ var(txn.l) -m found }" if k else "", f"l{k}_host" if h else "")
               for k, h in enumerate(hostnames)]
    return acls, selects


def _frontend(index: int, listener: L7Listener) -> list[str]:
    bind = f"  bind {address(listener.address, listener.port)} transparent"
    if listener.protocol == "HTTPS":
        bind += " ssl " + " ".join(f"crt {quote(c)}" for c in listener.certificates) + " alpn h2,http/1.1"
    acls, selects = _isolation(listener.listener_hostnames)
    requests: list[str] = []
    responses: list[str] = []
    uses: list[str] = []
    for i, entry in enumerate(listener.entries):
        lines, names = _match_acls(f"e{i}", entry.hostnames, entry.match)
        acls += lines
        unmatched = "!{ var(txn.e) -m found }" if i else ""
        owner = (f"{{ var(txn.l) -m int {listener.listener_hostnames.index(entry.listener_hostname)} }}"
                 if len(listener.listener_hostnames) > 1 else "")
        selects.append(f"  http-request set-var(txn.e) int({i}){_when(unmatched, owner, *names)}")
        matched = f"{{ var(txn.e) -m int {i} }}"
        picks = _ranges(entry.backends)
        request, response = _filters(entry, listener, matched, picks)
        requests += request
        responses += response
        if entry.filters.redirect is not None:
            continue  # answered by the redirect
        if not picks:  # no backend (or all weight 0): the spec's 500
            uses.append(f"  use_backend {UNRESOLVED}{_when(matched)}")
        uses += [f"  use_backend {b.pool or UNRESOLVED}{_when(matched, picked)}" for b, picked in picks]
    return [f"frontend l{index}_{listener.port}", bind, REQUEST_HOST, FORWARDED_PROTO,
            f"  http-request set-var(txn.pick) rand({PICK_SCALE})", *acls, *selects, *requests, *responses, *uses,
            f"  default_backend {NOT_FOUND}"]


def _persistence(pool: Pool) -> list[str]:
    """A cookie computed from the server's address (`dynamic`: it follows a runtime-API `set server addr`, and is
    the same on every node, whose key is the pool's name — it picks a pod, it authenticates nothing); or a stick
    table of client addresses."""
    p = pool.policy.persistence
    if isinstance(p, CookiePersistence):
        cookie = f"  cookie {p.name} insert indirect nocache httponly dynamic"
        cookie += f" maxidle {p.idle_seconds}s" if p.idle_seconds else ""
        cookie += f" maxlife {p.absolute_seconds}s" if p.absolute_seconds else ""
        cookie += f" attr {quote(f'Max-Age={p.absolute_seconds}')}" if p.permanent and p.absolute_seconds else ""
        return [cookie, f"  dynamic-cookie-key {quote(pool.name)}"]
    if isinstance(p, ClientPersistence):
        return [f"  stick-table type ipv6 size {TABLE_SIZE} expire {p.seconds}s",
                f"  stick on src,ipmask({p.ipv4_prefix},{p.ipv6_prefix})"]
    return []


def _rate_table(pool: Pool) -> str:
    """The backend holding only the stick table that counts a pool's requests per client address."""
    return f"rate_{pool.name}"


def _request_rate(pool: Pool) -> list[str]:
    """Requests per client address over the last second, counted in the pool's rate table."""
    if pool.policy.request_rate is None:
        return []
    per_second, burst = pool.policy.request_rate
    table = _rate_table(pool)
    return [f"  http-request track-sc1 src table {table}",
            f"  http-request deny deny_status 429 if {{ sc_http_req_rate(1,{table}) gt {per_second + burst} }}"]


def _backend(pool: Pool) -> list[str]:
    balance = pool.policy.balance
    lines = [f"backend {pool.name}", f"  balance {balance}",
             *(["  hash-type consistent"] if balance == "source" else []),
             RESPONSE_TIMEOUT, *_request_rate(pool), *_persistence(pool)]
    for i in range(slots(len(pool.endpoints))):
        if i < len(pool.endpoints):
            ep = pool.endpoints[i]
            lines.append(f"  server s{i} {address(ep.address, ep.port)}")
        else:
            lines.append(f"  server s{i} ipv4@0.0.0.0:1 disabled")
    return lines


def render(config: L7Config, *, runtime_socket: str, access_log: bool = False) -> str:
    """The whole configuration. No global maxconn: HAProxy sizes it from the process's file-descriptor limit."""
    out = [GLOBAL.format(runtime_socket=runtime_socket, log=ACCESS_LOG if access_log else "",
                         log_defaults=ACCESS_LOG_DEFAULTS if access_log else "")]
    for i, listener in enumerate(config.listeners):
        out.append("\n".join(_frontend(i, listener)) + "\n")
    for pool in config.pools:
        out.append("\n".join(_backend(pool)) + "\n")
        if pool.policy.request_rate is not None:
            out.append(f"backend {_rate_table(pool)}\n  stick-table type ipv6 size {TABLE_SIZE} expire 10s "
                       "store http_req_rate(1s)\n")
    out.append(f"backend {NOT_FOUND}\n  http-request return status 404\n")
    out.append(f"backend {UNRESOLVED}\n  http-request return status 500\n")
    return "\n".join(out)


def runtime_changes(old: L7Config, new: L7Config) -> list[str] | None:
    """The runtime-API commands that take a HAProxy running `old` to `new` without a reload, or None when only a
    reload can: anything but pools' endpoints changed (listeners, pools or their policies), or a pool needs another
    number of slots."""
    if old.listeners != new.listeners or {p.name: p.policy for p in old.pools} != {p.name: p.policy for p in new.pools}:
        return None
    before = {p.name: p.endpoints for p in old.pools}
    after = {p.name: p.endpoints for p in new.pools}
    commands = []
    for name, endpoints in sorted(after.items()):
        was = before[name]
        if was == endpoints:
            continue
        if slots(len(was)) != slots(len(endpoints)):
            return None
        for i in range(slots(len(endpoints))):
            old_ep, new_ep = (was[i] if i < len(was) else None), (endpoints[i] if i < len(endpoints) else None)
            if old_ep == new_ep:
                continue
            if new_ep is None:
                commands.append(f"set server {name}/s{i} state maint")
                continue
            commands.append(f"set server {name}/s{i} addr {new_ep.address} port {new_ep.port}")
            if old_ep is None:
                commands.append(f"set server {name}/s{i} state ready")
    return commands
