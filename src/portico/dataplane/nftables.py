"""Desired state -> the `portico` nftables table, and the transactions that get the kernel there.

Layout, chosen by measurement (docs/dataplane.md; a chain per endpoint is 40x slower to load):

  prerouting/output (nat)   ip daddr . l4proto . dport  vmap @frontends4  -> a dispatch chain
  dispatch chain            dnat to  ip daddr . dport . <slot>  map @backends4_tcp (one per protocol)
  slot                      numgen random mod N | numgen inc mod N | jhash(<flow>) mod M (Maglev)

Frontends with the same protocol, algorithm and slot count share one dispatch chain, so 10,000 plain
Services load as ~110,000 map elements and a handful of chains. A frontend gets a chain of its
own only when its rules are its own: round-robin (its own counter), source ranges, affinity.

Traffic to a VIP that no rule DNATs (no ready endpoint, a port nobody serves) is refused right
after the DNAT hook: TCP reset or ICMP port unreachable, never a black hole. Flows DNATed
to another node's pod are masqueraded so replies come back through this node (conntrack undoes
both); flows to this node's pods keep the client's address.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from portico.dataplane.maglev import maglev_table, table_size
from portico.dataplane.model import PROTOCOLS, Algorithm, Backend, DesiredState, Frontend, FrontendPolicy, IPNetwork
from portico.ipam.blocks import allocation_name

TABLE = "portico"
FAMILY = "inet"
MAGLEV_SEED = 0x5EED  # the same on every node, so every node hashes a flow to the same slot
ELEMENTS_PER_STATEMENT = 1000  # nft parses long element lists far faster than many statements

IP = {4: "ip", 6: "ip6"}
FRONTENDS = {4: "frontends4", 6: "frontends6"}
BACKENDS = {(v, proto): f"backends{v}_{proto}" for v in (4, 6) for proto in PROTOCOLS}
VIPS = {4: "vips4", 6: "vips6"}
LOCAL_PODS = {4: "local_pods4", 6: "local_pods6"}
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}

# Declared once, never flushed as a whole except in a full sync; their elements are the state.
STATIC_SETS = tuple(
    line for v in (4, 6) for line in (
        f"map {FRONTENDS[v]} {{ type {ADDR_TYPE[v]} . inet_proto . inet_service : verdict; }}",
        # One per protocol: nft derives the DNAT's protocol from the value's type (`th` cannot be re-read).
        *(f"map {BACKENDS[v, proto]} {{ typeof {IP[v]} daddr . th dport . numgen random mod 1 : "
          f"{IP[v]} daddr . {proto} dport; }}" for proto in PROTOCOLS),
        f"set {VIPS[v]} {{ type {ADDR_TYPE[v]}; }}",
        f"set {LOCAL_PODS[v]} {{ type {ADDR_TYPE[v]}; flags interval; }}",
    ))
STATIC_SET_NAMES = tuple(d.split()[1] for d in STATIC_SETS)

BASE_CHAINS: dict[str, tuple[str, tuple[str, ...]]] = {
    "prerouting": ("type nat hook prerouting priority dstnat; policy accept;", tuple(
        f"{IP[v]} daddr . meta l4proto . th dport vmap @{FRONTENDS[v]}" for v in (4, 6))),
    "output": ("type nat hook output priority -100; policy accept;", tuple(  # dstnat is prerouting-only
        f"{IP[v]} daddr . meta l4proto . th dport vmap @{FRONTENDS[v]}" for v in (4, 6))),
    "postrouting": ("type nat hook postrouting priority srcnat; policy accept;", tuple(
        f"ct status dnat ct original {IP[v]} daddr @{VIPS[v]} {IP[v]} daddr != @{LOCAL_PODS[v]} masquerade"
        for v in (4, 6))),
    # Whatever still goes to a VIP right after our DNAT was not DNATed: refuse it before routing does
    # anything else with it (forward it, or answer "no route"), and count.
    "refuse-incoming": ("type filter hook prerouting priority dstnat + 10; policy accept;", ("jump refuse",)),
    "refuse-local": ("type filter hook output priority -90; policy accept;", ("jump refuse",)),
}
REFUSE_CHAIN = ("refuse", tuple(
    rule for v in (4, 6) for rule in (
        f"{IP[v]} daddr @{VIPS[v]} meta l4proto tcp counter reject with tcp reset",
        f"{IP[v]} daddr @{VIPS[v]} counter reject with icmpx port-unreachable",
    )))


@dataclass(frozen=True)
class Ruleset:
    """The variable part of the table: regular chains and the elements of the static sets and maps."""

    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    elements: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)  # set -> key -> value


# -- desired state -> ruleset --------------------------------------------------------------------------
def frontend_key(fe: Frontend) -> str:
    return f"{fe.vip} . {fe.protocol} . {fe.port}"


def frontend_chain(fe: Frontend) -> str:
    return f"fe-{allocation_name(fe.vip)}-{fe.protocol}-{fe.port}"


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


def render_frontend(fe: Frontend, policy: FrontendPolicy) -> Ruleset:
    """The chains and elements one frontend needs. Shared chains appear in every fragment that uses them."""
    v = fe.family
    elements: dict[str, dict[str, str | None]] = {VIPS[v]: {str(fe.vip): None}}
    table = slots(policy)
    if not table:
        return Ruleset(elements=elements)  # no ready endpoint: not DNATed, so refused
    elements[BACKENDS[v, fe.protocol]] = {f"{fe.vip} . {fe.port} . {i}": f"{backend.ip} . {backend.port}"
                                         for i, backend in enumerate(table)}
    dnat = dnat_rule(v, fe.protocol, policy.algorithm, len(table))
    if policy.algorithm == Algorithm.ROUND_ROBIN or policy.source_ranges:
        chain = frontend_chain(fe)
        rules = []
        if policy.source_ranges:
            allowed = ", ".join(str(r) for r in policy.source_ranges if r.version == v)
            rules.append(f"{IP[v]} saddr != {{ {allowed} }} counter drop" if allowed else "counter drop")
        chains = {chain: (*rules, dnat)}
    else:
        chain = f"pick{v}-{fe.protocol}-{policy.algorithm}-{len(table)}"
        chains = {chain: (dnat,)}
    elements[FRONTENDS[v]] = {frontend_key(fe): f"goto {chain}"}
    return Ruleset(chains=chains, elements=elements)


def node_fragment(local_pod_cidrs: Iterable[IPNetwork]) -> Ruleset:
    """What belongs to the node rather than to a frontend."""
    elements: dict[str, dict[str, str | None]] = {}
    for cidr in local_pod_cidrs:
        elements.setdefault(LOCAL_PODS[cidr.version], {})[str(cidr)] = None
    return Ruleset(chains={REFUSE_CHAIN[0]: REFUSE_CHAIN[1]}, elements=elements)


def render(state: DesiredState) -> Ruleset:
    """The whole table at once, from scratch: the reference the incremental path must equal (tests, benches)."""
    kernel = KernelState()
    kernel.apply({NODE: node_fragment(state.local_pod_cidrs)})
    kernel.apply({fe: render_frontend(fe, policy) for fe, policy in state.frontends.items()})
    return kernel.ruleset()


NODE = "node"  # the fragment key of node_fragment


@dataclass
class Delta:
    """What one batch of fragment replacements changes in the kernel."""

    chains_added: dict[str, tuple[str, ...]] = field(default_factory=dict)
    chains_removed: list[str] = field(default_factory=list)
    elements_added: dict[str, dict[str, str | None]] = field(default_factory=dict)
    elements_removed: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.chains_added or self.chains_removed or self.elements_added or self.elements_removed)


class KernelState:
    """The table as the kernel holds it, kept as reference counts over fragments (one per frontend, one for
    the node): a VIP element or a shared chain stays while any fragment uses it. Replacing fragments yields
    the delta to apply, so an endpoint change costs work in proportion to that frontend, not the table."""

    def __init__(self) -> None:
        self.fragments: dict[object, Ruleset] = {}
        self._chains: dict[str, tuple[tuple[str, ...], int]] = {}
        self._elements: dict[str, dict[str, tuple[str | None, int]]] = {name: {} for name in STATIC_SET_NAMES}

    def apply(self, replacements: Mapping[object, Ruleset | None]) -> Delta:
        chains_before: dict[str, tuple[str, ...] | None] = {}
        elements_before: dict[tuple[str, str], tuple[str | None] | None] = {}
        for owner, new in replacements.items():
            old = self.fragments.pop(owner, None)
            for fragment, step in ((old, -1), (new, 1)):
                if fragment is None:
                    continue
                for name, rules in fragment.chains.items():
                    held = self._chains.get(name)
                    chains_before.setdefault(name, held[0] if held else None)
                    count = (held[1] if held else 0) + step
                    if count == 0:
                        del self._chains[name]
                    else:
                        self._chains[name] = (rules if step > 0 or held is None else held[0], count)
                for set_name, items in fragment.elements.items():
                    table = self._elements[set_name]
                    for key, value in items.items():
                        entry = table.get(key)
                        elements_before.setdefault((set_name, key), (entry[0],) if entry else None)
                        count = (entry[1] if entry else 0) + step
                        if count == 0:
                            del table[key]
                        else:  # a removal leaves the value the remaining users put there
                            table[key] = (value if step > 0 or entry is None else entry[0], count)
            if new is not None:
                self.fragments[owner] = new
        delta = Delta()
        for name, before in chains_before.items():
            after = self._chains.get(name)
            if after is None and before is not None:
                delta.chains_removed.append(name)
            elif after is not None and after[0] != before:
                delta.chains_added[name] = after[0]
        for (set_name, key), was in elements_before.items():
            entry = self._elements[set_name].get(key)
            now = (entry[0],) if entry else None
            if now == was:
                continue
            if was is not None:
                delta.elements_removed.setdefault(set_name, []).append(key)
            if now is not None:
                delta.elements_added.setdefault(set_name, {})[key] = now[0]
        return delta

    def ruleset(self) -> Ruleset:
        return Ruleset(chains={name: rules for name, (rules, _) in self._chains.items()},
                       elements={name: {k: v for k, (v, _) in items.items()} for name, items in self._elements.items()})


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


def full_transaction(new: Ruleset, existing_chains: Iterable[str] = (), existing_sets: Iterable[str] = ()) -> str:
    """Everything from scratch, adopting a table a previous agent (perhaps an older version) left: declare,
    flush, refill, and delete the chains, sets and maps nobody wants any more. Established flows live in
    conntrack and are untouched."""
    lines = [f"add table {FAMILY} {TABLE}"]
    lines += [f"add {decl.split(' ', 1)[0]} {FAMILY} {TABLE} {decl.split(' ', 1)[1]}" for decl in STATIC_SETS]
    lines += [f"flush {decl.split()[0]} {FAMILY} {TABLE} {decl.split()[1]}" for decl in STATIC_SETS]
    for name in new.chains:
        lines.append(_t("add chain", name))
    for name, (hook, rules) in BASE_CHAINS.items():
        lines.append(f"add chain {FAMILY} {TABLE} {name} {{ {hook} }}")
        lines += _fill_chain(name, rules)
    for name, rules in new.chains.items():
        lines += _fill_chain(name, rules)
    for name, elements in new.elements.items():
        lines += _element_statements("add", name, elements.items())
    for name in sorted(set(existing_chains) - set(new.chains) - set(BASE_CHAINS)):
        lines += [_t("flush chain", name), _t("delete chain", name)]
    for name in sorted(set(existing_sets) - set(STATIC_SET_NAMES)):
        lines.append(_t("delete set", name))  # `delete set` removes maps too
    return "\n".join(lines) + "\n"


def incremental_transaction(delta: Delta) -> str:
    """Only what changed, in an order the kernel accepts within one atomic transaction: new chains exist
    before elements point at them; chains go after the last element pointing at them."""
    lines: list[str] = []
    for name, rules in delta.chains_added.items():
        lines += [_t("add chain", name), *_fill_chain(name, rules)]  # `add chain` is idempotent
    for name, keys in delta.elements_removed.items():
        lines += _element_statements("delete", name, ((k, None) for k in keys))
    for name, items in delta.elements_added.items():
        lines += _element_statements("add", name, items.items())
    for name in delta.chains_removed:
        lines += [_t("flush chain", name), _t("delete chain", name)]
    return "\n".join(lines) + "\n" if lines else ""
