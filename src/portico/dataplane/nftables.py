"""Desired state -> the `portico` nftables table, and the transactions that get the kernel there.

Layout, chosen by measurement (docs/dataplane.md; a chain per endpoint is 40x slower to load):

  prerouting/output (nat)   ip daddr . l4proto . dport  vmap @frontends4  -> a dispatch chain
  dispatch chain            dnat to  ip daddr . dport . <slot>  map @backends4_tcp (one per protocol)
  slot                      numgen random mod N | numgen inc mod N | jhash(<flow>) mod M (Maglev)

Frontends with the same protocol, algorithm and slot count share one dispatch chain, so 10,000 plain
Services load as ~110,000 map elements and a handful of chains. A frontend gets a chain of its
own only when its rules are its own: round-robin (its own counter), source ranges, affinity.

sessionAffinity ClientIP is kube-proxy's design: a chain and a timed set per backend, so a client's
pin disappears with its backend. It costs a chain per endpoint, paid only by the Services that ask.

Counting, for metrics without a read-back on the sync path: every packet towards a frontend hits its
element in a counting set before NAT; refusals and source-range drops have named counters.

Traffic to a VIP that no rule DNATs (no ready endpoint, a port nobody serves) is refused right
after the DNAT hook: TCP reset or ICMP port unreachable, never a black hole. Flows DNATed
to another node's pod are masqueraded so replies come back through this node (conntrack undoes
both); flows to this node's pods keep the client's address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from portico.dataplane.local_delivery import DELIVERY_MARK
from portico.dataplane.maglev import maglev_table, table_size
from portico.dataplane.model import (
    PROTOCOLS,
    Algorithm,
    Backend,
    DesiredState,
    Frontend,
    FrontendPolicy,
    IPNetwork,
    Limits,
)
from portico.ipam.blocks import IPAddress, allocation_name


def netmask(family: int, prefix: int) -> IPAddress:
    return (ipaddress.IPv4Network((0, prefix)) if family == 4 else ipaddress.IPv6Network((0, prefix))).netmask

TABLE = "portico"
FAMILY = "inet"
MAGLEV_SEED = 0x5EED  # the same on every node, so every node hashes a flow to the same slot
ELEMENTS_PER_STATEMENT = 1000  # nft parses long element lists far faster than many statements

IP = {4: "ip", 6: "ip6"}
FRONTENDS = {4: "frontends4", 6: "frontends6"}
BACKENDS = {(v, proto): f"backends{v}_{proto}" for v in (4, 6) for proto in PROTOCOLS}
VIPS = {4: "vips4", 6: "vips6"}
LOCAL_PODS = {4: "local_pods4", 6: "local_pods6"}
LOCAL_FRONTENDS = {4: "local_frontends4", 6: "local_frontends6"}  # served by HAProxy on the node (Gateways)
FRONTEND_COUNTERS = {4: "frontend_counters4", 6: "frontend_counters6"}
SOURCE_FILTERS = {4: "source_filters4", 6: "source_filters6"}  # frontend -> its loadBalancerSourceRanges chain
BANDWIDTH_IN = {4: "bandwidth_in4", 6: "bandwidth_in6"}  # frontend -> its bandwidth limit, client to VIP
BANDWIDTH_OUT = {4: "bandwidth_out4", 6: "bandwidth_out6"}  # ... and VIP to client (replies, after un-DNAT)
LIMIT_KINDS = ("connections", "client-connections", "client-rate", "bandwidth-in", "bandwidth-out")
REFUSED = {4: "refused4", 6: "refused6"}  # named counters
HEARTBEAT_PEERS = {4: "heartbeat_peers4", 6: "heartbeat_peers6"}
HEARTBEATS_DROPPED = "heartbeats_dropped"  # named counter
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}

# Declared once, never flushed as a whole except in a full sync; their elements are the state.
STATIC_SETS = tuple(
    line for v in (4, 6) for line in (
        f"map {FRONTENDS[v]} {{ type {ADDR_TYPE[v]} . inet_proto . inet_service : verdict; }}",
        f"set {FRONTEND_COUNTERS[v]} {{ type {ADDR_TYPE[v]} . inet_proto . inet_service; counter; }}",
        f"map {SOURCE_FILTERS[v]} {{ type {ADDR_TYPE[v]} . inet_proto . inet_service : verdict; }}",
        f"map {BANDWIDTH_IN[v]} {{ type {ADDR_TYPE[v]} . inet_proto . inet_service : verdict; }}",
        f"map {BANDWIDTH_OUT[v]} {{ type {ADDR_TYPE[v]} . inet_proto . inet_service : verdict; }}",
        # One per protocol: nft derives the DNAT's protocol from the value's type (`th` cannot be re-read).
        *(f"map {BACKENDS[v, proto]} {{ typeof {IP[v]} daddr . th dport . numgen random mod 1 : "
          f"{IP[v]} daddr . {proto} dport; }}" for proto in PROTOCOLS),
        f"set {VIPS[v]} {{ type {ADDR_TYPE[v]}; }}",
        f"set {LOCAL_FRONTENDS[v]} {{ type {ADDR_TYPE[v]} . inet_proto . inet_service; }}",
        f"set {LOCAL_PODS[v]} {{ type {ADDR_TYPE[v]}; flags interval; }}",
        f"set {HEARTBEAT_PEERS[v]} {{ type {ADDR_TYPE[v]}; }}",
    ))
STATIC_SET_NAMES = tuple(d.split()[1] for d in STATIC_SETS)
STATIC_COUNTERS = (*REFUSED.values(), HEARTBEATS_DROPPED)

@dataclass(frozen=True)
class BaseChain:
    type: str  # filter | nat
    hook: str
    priority: int  # numeric, as the kernel (and `nft -j`) reports it: dstnat -100, srcnat 100, filter 0
    rules: tuple[str, ...]

    @property
    def declaration(self) -> str:
        return f"type {self.type} hook {self.hook} priority {self.priority}; policy accept;"


DSTNAT, SRCNAT = -100, 100
BASE_CHAINS: dict[str, BaseChain] = {
    # A Gateway's frontends are HAProxy's on this node, bound transparent to the VIP (on no interface): every
    # packet of theirs is marked, and the mark's policy route delivers it locally (portico.dataplane.local_delivery).
    "deliver-local": BaseChain("filter", "prerouting", DSTNAT - 20, tuple(
        f"{IP[v]} daddr . meta l4proto . th dport @{LOCAL_FRONTENDS[v]} meta mark set meta mark | {DELIVERY_MARK:#x}"
        for v in (4, 6))),
    # Before anyone's NAT and filtering (kube-proxy filters at dstnat - 10): counts every packet of every flow
    # (client -> VIP), and drops what loadBalancerSourceRanges does not allow, counted per frontend.
    # Bandwidth limits (client -> VIP) first: a source filter's verdict ends the chain.
    "count-incoming": BaseChain("filter", "prerouting", DSTNAT - 15, tuple(
        rule for v in (4, 6) for rule in (
            f"{IP[v]} daddr . meta l4proto . th dport @{FRONTEND_COUNTERS[v]}",
            f"{IP[v]} daddr . meta l4proto . th dport vmap @{BANDWIDTH_IN[v]}",
            f"{IP[v]} daddr . meta l4proto . th dport vmap @{SOURCE_FILTERS[v]}"))),
    # Replies leave with the VIP as their source once conntrack has undone the DNAT (at srcnat): bandwidth
    # limits of the other direction.
    "limit-outgoing": BaseChain("filter", "postrouting", SRCNAT + 10, tuple(
        f"{IP[v]} saddr . meta l4proto . th sport vmap @{BANDWIDTH_OUT[v]}" for v in (4, 6))),
    # Just before dstnat, where kube-proxy (both modes) and most others DNAT: the first NAT chain that binds a
    # connection is the only one the kernel runs for it, so a VIP's flows are Portico's even where kube-proxy
    # also programs the Service's LoadBalancer IP (ipMode VIP). docs/dataplane.md#kube-proxy
    "prerouting": BaseChain("nat", "prerouting", DSTNAT - 5, tuple(
        f"{IP[v]} daddr . meta l4proto . th dport vmap @{FRONTENDS[v]}" for v in (4, 6))),
    "output": BaseChain("nat", "output", DSTNAT - 5, tuple(  # dstnat is prerouting-only
        f"{IP[v]} daddr . meta l4proto . th dport vmap @{FRONTENDS[v]}" for v in (4, 6))),
    "postrouting": BaseChain("nat", "postrouting", SRCNAT, tuple(
        f"ct status dnat ct original {IP[v]} daddr @{VIPS[v]} {IP[v]} daddr != @{LOCAL_PODS[v]} masquerade"
        for v in (4, 6))),
    # Whatever still goes to a VIP right after our DNAT was not DNATed: refuse it before routing does
    # anything else with it (forward it, or answer "no route"), and count.
    "refuse-incoming": BaseChain("filter", "prerouting", DSTNAT + 10, ("jump refuse",)),
    "refuse-local": BaseChain("filter", "output", -90, ("jump refuse",)),
    # The heartbeat port takes datagrams from peers' addresses only: a flood from anywhere else costs the agent
    # nothing. (No rate limit per peer: it would let a flood spoofed as a peer silence that peer's real beats.)
    "heartbeat-in": BaseChain("filter", "input", -10, ("jump heartbeat",)),
}
HEARTBEAT_CHAIN = "heartbeat"
REFUSE_CHAIN = ("refuse", tuple(
    rule for v in (4, 6) for rule in (
        f"{IP[v]} daddr . meta l4proto . th dport @{LOCAL_FRONTENDS[v]} return",  # HAProxy's, delivered locally
        f'{IP[v]} daddr @{VIPS[v]} meta l4proto tcp counter name "{REFUSED[v]}" reject with tcp reset',
        f'{IP[v]} daddr @{VIPS[v]} counter name "{REFUSED[v]}" reject with icmpx port-unreachable',
    )))


@dataclass(frozen=True)
class Ruleset:
    """The variable part of the table: regular chains, named objects (sets, counters) and the elements of
    the static sets and maps."""

    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # name -> declaration ("set NAME { ... }", "counter NAME"); a name never changes its declaration
    objects: Mapping[str, str] = field(default_factory=dict)
    elements: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)  # set -> key -> value


# -- desired state -> ruleset --------------------------------------------------------------------------
def frontend_key(fe: Frontend) -> str:
    return f"{fe.vip} . {fe.protocol} . {fe.port}"


def frontend_name(fe: Frontend) -> str:
    """A frontend in the names of its chains, sets and counters: 198-18-100-1-tcp-80."""
    return f"{allocation_name(fe.vip)}-{fe.protocol}-{fe.port}"


def frontend_chain(fe: Frontend) -> str:
    return f"fe-{frontend_name(fe)}"


def slots(policy: FrontendPolicy) -> list[Backend]:
    """Slot -> backend: one slot per unit of weight, or a Maglev table."""
    if policy.algorithm in (Algorithm.MAGLEV, Algorithm.MAGLEV_5TUPLE):
        by_name = {b.name: b for b in policy.backends}
        size = table_size(len(by_name))
        return [by_name[n] for n in maglev_table({b.name: b.weight for b in policy.backends}, size)]
    return [b for b in policy.backends for _ in range(b.weight)]


def slot_expression(family: int, algorithm: Algorithm, n: int) -> str:
    ip = IP[family]
    match algorithm:
        case Algorithm.RANDOM:
            return f"numgen random mod {n}"
        case Algorithm.ROUND_ROBIN:
            return f"numgen inc mod {n}"
        case Algorithm.MAGLEV:
            return f"jhash {ip} saddr mod {n} seed {MAGLEV_SEED:#x}"
        case Algorithm.MAGLEV_5TUPLE:  # the rest of the 5-tuple is the frontend's own, the same for every flow
            return f"jhash {ip} saddr . th sport mod {n} seed {MAGLEV_SEED:#x}"


def dnat_rule(family: int, protocol: str, algorithm: Algorithm, n: int) -> str:
    ip = IP[family]
    return (f"meta l4proto {protocol} dnat {ip} to {ip} daddr . th dport . {slot_expression(family, algorithm, n)} "
            f"map @{BACKENDS[family, protocol]}")


def source_chain(fe: Frontend) -> str:
    """The chain that drops what a frontend's source ranges do not allow, before any NAT."""
    return f"src-{frontend_name(fe)}"


def dropped_counter(fe: Frontend) -> str:
    """The named counter of what a frontend's source ranges drop."""
    return f"dropped-{frontend_name(fe)}"


def limit_counter(fe: Frontend, kind: str) -> str:
    """The named counter of what one of a frontend's limits drops (kind: one of LIMIT_KINDS)."""
    return f"limit-{frontend_name(fe)}-{kind}"


def _limits(fe: Frontend, limits: Limits) -> tuple[list[str], Ruleset]:
    """A frontend's limits: the rules its own chain starts with (new connections only: the nat hook sees the
    first packet of each), and the sets, counters, bandwidth chains and map elements they use."""
    v, ip, key = fe.family, IP[fe.family], frontend_key(fe)
    suffix = frontend_name(fe)
    refuse = "reject with tcp reset" if fe.protocol == "tcp" else "reject with icmpx port-unreachable"
    rules: list[str] = []
    chains: dict[str, tuple[str, ...]] = {}
    objects: dict[str, str] = {}
    elements: dict[str, dict[str, str | None]] = {}

    def counted(kind: str) -> str:
        name = limit_counter(fe, kind)
        objects[name] = f"counter {name}"
        return f'counter name "{name}"'
    if limits.connections is not None:
        rules.append(f"ct count over {limits.connections} {counted('connections')} {refuse}")
    if limits.client_connections is not None:
        clients = f"conns-{suffix}"
        objects[clients] = f"set {clients} {{ type {ADDR_TYPE[v]}; size 65535; flags dynamic; }}"
        rules.append(f"add @{clients} {{ {ip} saddr ct count over {limits.client_connections} }} "
                     f"{counted('client-connections')} {refuse}")
    if limits.client_rate is not None:
        rate, burst = limits.client_rate
        clients = f"rate-{suffix}-{rate}-{burst}"  # the limit's state lives in the elements: new settings, new set
        objects[clients] = f"set {clients} {{ type {ADDR_TYPE[v]}; size 65535; flags dynamic,timeout; timeout 60s; }}"
        rules.append(f"update @{clients} {{ {ip} saddr limit rate over {rate}/second burst {max(burst, 1)} packets }} "
                     f"{counted('client-rate')} drop")
    if limits.bandwidth is not None:
        # No burst: the kernel's bucket for a rate in bytes already holds a second's worth (rate + burst).
        for kind, table, chain in (("bandwidth-in", BANDWIDTH_IN[v], f"bwi-{suffix}"),
                                   ("bandwidth-out", BANDWIDTH_OUT[v], f"bwo-{suffix}")):
            chains[chain] = (f"limit rate over {limits.bandwidth} bytes/second {counted(kind)} drop",)
            elements[table] = {key: f"jump {chain}"}
    return rules, Ruleset(chains=chains, objects=objects, elements=elements)


def render_frontend(fe: Frontend, policy: FrontendPolicy) -> Ruleset:
    """The chains, objects and elements one frontend needs. Shared chains appear in every fragment using them."""
    v, key = fe.family, frontend_key(fe)
    elements: dict[str, dict[str, str | None]] = {VIPS[v]: {str(fe.vip): None}, FRONTEND_COUNTERS[v]: {key: None}}
    if policy.deliver_local:
        return Ruleset(elements={**elements, LOCAL_FRONTENDS[v]: {key: None}})
    table = slots(policy)
    if not table:
        return Ruleset(elements=elements)  # no ready endpoint: not DNATed, so refused
    chains: dict[str, tuple[str, ...]] = {}
    objects: dict[str, str] = {}
    own: list[str] = []  # the rules of a chain of the frontend's own, if it needs one
    if policy.source_ranges:
        counter = dropped_counter(fe)
        objects[counter] = f"counter {counter}"
        allowed = ", ".join(str(r) for r in policy.source_ranges if r.version == v)
        match = f"{IP[v]} saddr != {{ {allowed} }} " if allowed else ""  # only the other family's: drop all
        drop = f'{match}counter name "{counter}" drop'
        chains[source_chain(fe)] = (drop,)  # incoming, before any DNAT (ours or kube-proxy's)
        elements[SOURCE_FILTERS[v]] = {key: f"goto {source_chain(fe)}"}
        own.append(drop)  # the node's own connections, which only the nat output hook sees
    if policy.limits is not None:
        rules, limited = _limits(fe, policy.limits)
        own += rules
        chains.update(limited.chains)
        objects.update(limited.objects)
        elements.update({name: dict(values) for name, values in limited.elements.items()})
    if policy.affinity_timeout is not None:
        rules, per_backend = _affinity(fe, policy.algorithm, policy.affinity_timeout, policy.affinity_prefix, table)
        own += rules
        chains.update(per_backend.chains)
        objects.update(per_backend.objects)
    else:
        elements[BACKENDS[v, fe.protocol]] = {f"{fe.vip} . {fe.port} . {i}": f"{backend.ip} . {backend.port}"
                                             for i, backend in enumerate(table)}
        dnat = dnat_rule(v, fe.protocol, policy.algorithm, len(table))
        if own or policy.algorithm == Algorithm.ROUND_ROBIN:  # round-robin: a counter of its own
            own.append(dnat)
        else:
            chain = f"pick{v}-{fe.protocol}-{policy.algorithm}-{len(table)}"
            chains[chain] = (dnat,)
    if own:
        chain = frontend_chain(fe)
        chains[chain] = tuple(own)
    elements[FRONTENDS[v]] = {key: f"goto {chain}"}
    return Ruleset(chains=chains, objects=objects, elements=elements)


def _affinity(fe: Frontend, algorithm: Algorithm, timeout: int, prefix: int | None,
              table: list[Backend]) -> tuple[list[str], Ruleset]:
    """sessionAffinity ClientIP: a client seen within `timeout` goes back to its backend; a new one is
    picked as usual and remembered. With a prefix length, the client is its network (a persistence mask).
    Returns the frontend chain's rules and the per-backend chains and sets. Names carry the backend, so
    other backends' pins survive a change, and the timeout and prefix, so a declaration never changes."""
    v, ip = fe.family, IP[fe.family]
    client = f"{ip} saddr"
    pin_suffix = str(timeout)
    if prefix is not None:
        client += f" & {netmask(v, prefix)}"
        pin_suffix += f"-{prefix}"
    rules: list[str] = []
    chains: dict[str, tuple[str, ...]] = {}
    objects: dict[str, str] = {}
    chain_of: dict[Backend, str] = {}
    for backend in sorted(set(table)):
        suffix = f"{frontend_name(fe)}-{allocation_name(backend.ip)}-{backend.port}"
        chain, pins = f"be-{suffix}", f"aff-{suffix}-{pin_suffix}"
        objects[pins] = f"set {pins} {{ type {ADDR_TYPE[v]}; flags dynamic,timeout; timeout {timeout}s; }}"
        target = f"[{backend.ip}]:{backend.port}" if v == 6 else f"{backend.ip}:{backend.port}"
        chains[chain] = (f"update @{pins} {{ {client} }}", f"meta l4proto {fe.protocol} dnat {ip} to {target}")
        rules.append(f"{client} @{pins} goto {chain}")
        chain_of[backend] = chain
    pick = ", ".join(f"{i} : goto {chain_of[backend]}" for i, backend in enumerate(table))
    rules.append(f"{slot_expression(v, algorithm, len(table))} vmap {{ {pick} }}")
    return rules, Ruleset(chains=chains, objects=objects)


def node_fragment(local_pod_cidrs: Iterable[IPNetwork], heartbeat_port: int | None = None,
                  heartbeat_peers: Iterable[IPAddress] = ()) -> Ruleset:
    """What belongs to the node rather than to a frontend."""
    elements: dict[str, dict[str, str | None]] = {}
    for cidr in local_pod_cidrs:
        elements.setdefault(LOCAL_PODS[cidr.version], {})[str(cidr)] = None
    for peer in heartbeat_peers:
        elements.setdefault(HEARTBEAT_PEERS[peer.version], {})[str(peer)] = None
    rules = tuple(f'udp dport {heartbeat_port} {IP[v]} saddr != @{HEARTBEAT_PEERS[v]} counter name '
                  f'"{HEARTBEATS_DROPPED}" drop' for v in (4, 6)) if heartbeat_port is not None else ()
    return Ruleset(chains={REFUSE_CHAIN[0]: REFUSE_CHAIN[1], HEARTBEAT_CHAIN: rules}, elements=elements)


def render(state: DesiredState) -> Ruleset:
    """The whole table at once, from scratch: the reference the incremental path must equal (tests, benches)."""
    kernel = KernelState()
    kernel.apply({NODE: node_fragment(state.local_pod_cidrs)})
    kernel.apply({fe: render_frontend(fe, policy) for fe, policy in state.frontends.items()})
    return kernel.ruleset()


NODE = "node"  # the fragment key of node_fragment
V = TypeVar("V")


@dataclass
class Delta:
    """What one batch of fragment replacements changes in the kernel."""

    chains_added: dict[str, tuple[str, ...]] = field(default_factory=dict)
    chains_removed: list[str] = field(default_factory=list)
    objects_added: dict[str, str] = field(default_factory=dict)
    objects_removed: dict[str, str] = field(default_factory=dict)  # name -> its declaration
    elements_added: dict[str, dict[str, str | None]] = field(default_factory=dict)
    elements_removed: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any((self.chains_added, self.chains_removed, self.objects_added, self.objects_removed,
                    self.elements_added, self.elements_removed))


class _Counted(Generic[V]):
    """Named things with a value, each held while any fragment holds it; a removal leaves the value the
    remaining holders put there. Records each name's value before the first change of a batch."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[V, int]] = {}
        self.before: dict[str, tuple[V] | None] = {}

    def change(self, name: str, value: V, step: int) -> None:
        entry = self.held.get(name)
        self.before.setdefault(name, (entry[0],) if entry else None)
        count = (entry[1] if entry else 0) + step
        if count == 0:
            del self.held[name]
        else:
            self.held[name] = (value if step > 0 or entry is None else entry[0], count)

    def changes(self) -> tuple[dict[str, V], dict[str, V]]:
        """What this batch removed and added (a changed value is in both), by name; starts the next batch."""
        removed: dict[str, V] = {}
        added: dict[str, V] = {}
        for name, was in self.before.items():
            entry = self.held.get(name)
            now = (entry[0],) if entry else None
            if now == was:
                continue
            if was is not None:
                removed[name] = was[0]
            if now is not None:
                added[name] = now[0]
        self.before = {}
        return removed, added

    def values(self) -> dict[str, V]:
        return {name: value for name, (value, _) in self.held.items()}


class KernelState:
    """The table as the kernel holds it, kept as reference counts over fragments (one per frontend, one for
    the node): a VIP element or a shared chain stays while any fragment uses it. Replacing fragments yields
    the delta to apply, so an endpoint change costs work in proportion to that frontend, not the table."""

    def __init__(self) -> None:
        self.fragments: dict[object, Ruleset] = {}
        self._chains = _Counted[tuple[str, ...]]()
        self._objects = _Counted[str]()
        self._elements = {name: _Counted[str | None]() for name in STATIC_SET_NAMES}

    def apply(self, replacements: Mapping[object, Ruleset | None]) -> Delta:
        for owner, new in replacements.items():
            old = self.fragments.pop(owner, None)
            for fragment, step in ((old, -1), (new, 1)):
                if fragment is None:
                    continue
                for name, rules in fragment.chains.items():
                    self._chains.change(name, rules, step)
                for name, declaration in fragment.objects.items():
                    self._objects.change(name, declaration, step)
                for set_name, items in fragment.elements.items():
                    for key, value in items.items():
                        self._elements[set_name].change(key, value, step)
            if new is not None:
                self.fragments[owner] = new
        chains_removed, chains_added = self._chains.changes()
        objects_removed, objects_added = self._objects.changes()
        delta = Delta(chains_added=chains_added, chains_removed=[n for n in chains_removed if n not in chains_added],
                      objects_added=objects_added,
                      objects_removed={n: d for n, d in objects_removed.items() if n not in objects_added})
        for set_name, counted in self._elements.items():
            elements_removed, elements_added = counted.changes()
            if elements_removed:
                delta.elements_removed[set_name] = list(elements_removed)
            if elements_added:
                delta.elements_added[set_name] = elements_added
        return delta

    def ruleset(self) -> Ruleset:
        return Ruleset(chains=self._chains.values(), objects=self._objects.values(),
                       elements={name: counted.values() for name, counted in self._elements.items()})


# -- ruleset -> transactions ---------------------------------------------------------------------------
def _t(kind: str, name: str) -> str:
    return f"{kind} {FAMILY} {TABLE} {name}"


def _element_statements(verb: str, name: str, items: Iterable[tuple[str, str | None]]) -> Iterator[str]:
    batch: list[str] = []
    for key, value in items:
        batch.append(key if value is None else f"{key} : {value}")
        if len(batch) == ELEMENTS_PER_STATEMENT:
            yield f"{verb} element {FAMILY} {TABLE} {name} {{ {', '.join(batch)} }}"
            batch = []
    if batch:
        yield f"{verb} element {FAMILY} {TABLE} {name} {{ {', '.join(batch)} }}"


def _fill_chain(name: str, rules: tuple[str, ...]) -> Iterator[str]:
    yield _t("flush chain", name)
    for rule in rules:
        yield f"add rule {FAMILY} {TABLE} {name} {rule}"


def _remove_chains(names: list[str]) -> list[str]:
    """Flush them all first: a chain cannot go while a rule still jumps to it (one of these, perhaps)."""
    return [_t("flush chain", name) for name in names] + [_t("delete chain", name) for name in names]


def _declare(kind_and_body: str) -> str:
    kind, body = kind_and_body.split(" ", 1)
    return f"add {kind} {FAMILY} {TABLE} {body}"


@dataclass(frozen=True)
class ExistingTable:
    """Our table as the kernel has it, read when adopting it (never on the hot path)."""

    chains: tuple[str, ...] = ()
    objects: Mapping[str, str] = field(default_factory=dict)  # name -> set, map or counter
    hooks: Mapping[str, tuple[str, str, int]] = field(default_factory=dict)  # base chain -> (type, hook, priority)


def full_transaction(new: Ruleset, existing: ExistingTable = ExistingTable()) -> str:
    """Everything from scratch, adopting a table a previous agent (perhaps an older version) left: declare,
    flush, refill, and delete the chains and objects (name -> kind) nobody wants any more; base chains whose
    (type, hook, priority) changed are made anew. Established flows live in conntrack and are untouched;
    affinity pins that are still wanted are kept."""
    lines = [f"add table {FAMILY} {TABLE}"]
    lines += [_declare(decl) for decl in STATIC_SETS]
    lines += [f"flush {decl.split()[0]} {FAMILY} {TABLE} {decl.split()[1]}" for decl in STATIC_SETS]
    lines += [_t("add counter", name) for name in STATIC_COUNTERS]
    lines += [_declare(decl) for decl in new.objects.values()]
    for name in new.chains:
        lines.append(_t("add chain", name))
    for name, chain in BASE_CHAINS.items():
        if name in existing.hooks and existing.hooks[name] != (chain.type, chain.hook, chain.priority):
            lines += _remove_chains([name])  # an older agent's: a hook's priority cannot be changed in place
        lines.append(f"add chain {FAMILY} {TABLE} {name} {{ {chain.declaration} }}")
        lines += _fill_chain(name, chain.rules)
    for name, rules in new.chains.items():
        lines += _fill_chain(name, rules)
    for name, elements in new.elements.items():
        lines += _element_statements("add", name, elements.items())
    lines += _remove_chains(sorted(set(existing.chains) - set(new.chains) - set(BASE_CHAINS)))
    keep = {*new.objects, *STATIC_SET_NAMES, *STATIC_COUNTERS}
    for name, kind in sorted(existing.objects.items()):
        if name not in keep:
            lines.append(_t(f"delete {kind}", name))
    return "\n".join(lines) + "\n"


def incremental_transaction(delta: Delta) -> str:
    """Only what changed, in an order the kernel accepts within one atomic transaction: new chains exist
    before elements point at them; chains go after the last element pointing at them; sets and counters
    exist before rules use them and go after the last one did."""
    lines = [_declare(decl) for decl in delta.objects_added.values()]
    lines += [_t("add chain", name) for name in delta.chains_added]  # all exist before any rule jumps to one
    for name, rules in delta.chains_added.items():
        lines += _fill_chain(name, rules)
    for name, keys in delta.elements_removed.items():
        lines += _element_statements("delete", name, ((k, None) for k in keys))
    for name, items in delta.elements_added.items():
        lines += _element_statements("add", name, items.items())
    lines += _remove_chains(delta.chains_removed)
    for name, declaration in delta.objects_removed.items():  # after the last rule using them
        lines.append(_t(f"delete {declaration.split()[0]}", name))
    return "\n".join(lines) + "\n" if lines else ""
