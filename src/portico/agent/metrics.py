"""The agent's Prometheus metrics. Labels name Services and frontends; endpoints only in portico_backend_up,
whose series are capped per node (MAX_BACKEND_SERIES).

Sync and programming latencies are observed by the agent as it works; packet counts live in the
kernel (nft counters, `portico.dataplane.nftables`) and are read only when Prometheus scrapes, so
counting costs the sync path nothing.

/metrics is served from a thread (`portico.serving`), but the state it reports belongs to the event
loop, which mutates it between awaits: the collectors run on the loop (`_OnLoop`), never iterating a
dict or set while the loop changes it. Only the blocking `nft` reads of the counters stay in the thread.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from portico.agent.bgp import BgpAnnouncements
from portico.agent.haproxy import HAProxy
from portico.agent.health import AgentHealth
from portico.agent.liveness import NodeLiveness
from portico.announce.announcer import L2Announcer
from portico.api.v1alpha1 import CHECK_TYPES
from portico.dataplane.model import Frontend, FrontendPolicy
from portico.dataplane.nft import Counters, Nft
from portico.dataplane.nftables import (
    FRONTEND_COUNTERS,
    HEARTBEATS_DROPPED,
    LIMIT_KINDS,
    REFUSED,
    dropped_counter,
    limit_counter,
)
from portico.ipam.blocks import IPAddress
from portico.serving import LoopBridge

OnLoop = Callable[[Callable[[], list[Metric]]], list[Metric]]
FRONTEND_LABELS = ("service", "vip", "protocol", "port")


MAX_BACKEND_SERIES = 1000  # portico_backend_up series per node; beyond, counted in portico_backend_up_unreported


class AgentMetrics:
    def __init__(self, nft: Nft, *, service_of: Callable[[Frontend], str | None],
                 applied: Mapping[Frontend, tuple[str, FrontendPolicy]],
                 problems: Callable[[], Mapping[str, list[str]]], l2: L2Announcer, bgp: BgpAnnouncements,
                 health: AgentHealth, liveness: NodeLiveness, haproxy: HAProxy) -> None:
        self.registry = CollectorRegistry()
        # Per check type, not per endpoint: observed at every probe (10,000 a second), it must stay cheap.
        self.probe_seconds = Histogram(
            "portico_health_probe_duration_seconds", "From a health probe sent to its answer (successful probes)",
            ["type"], registry=self.registry, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                       0.5, 1))
        by_type = {kind: self.probe_seconds.labels(kind) for kind in CHECK_TYPES}  # labels() once, not per probe
        health.checker.probers.latency = lambda kind, seconds: by_type[kind].observe(seconds)
        self.sync_seconds = Histogram(
            "portico_agent_sync_duration_seconds", "Time to bring the kernel's table to the desired state",
            ["kind"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.programming_seconds = Histogram(
            "portico_agent_network_programming_duration_seconds",
            "From an EndpointSlice change (its last-change-trigger-time) to this node's rules applied",
            registry=self.registry, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.sync_failures = Counter("portico_agent_sync_failures",
                                     "Transactions nft refused (each is followed by a full sync)",
                                     registry=self.registry)
        self.table_repairs = Counter("portico_agent_table_repairs",
                                     "Full syncs after someone else changed the table (nft flush ruleset, a "
                                     "firewall reload, an edit), or after the watch on it restarted",
                                     registry=self.registry)
        self.bridge = LoopBridge()  # the collectors read the event loop's state on the loop
        self.registry.register(_KernelCounters(nft, service_of, self.bridge.call))
        for collector in (_Backends(applied), _Problems(problems), _Announcements(l2), _Bgp(bgp),
                          _Health(health, liveness), _HAProxy(haproxy)):
            self.registry.register(_OnLoop(collector, self.bridge.call))


def _labels(fe: Frontend, service: str) -> list[str]:
    return [service, str(fe.vip), fe.protocol, str(fe.port)]


class _KernelCounters(Collector):
    """Per-frontend packets and bytes (client -> VIP, every packet of every flow), source-range drops
    per frontend, and refusals per family, read from the kernel at scrape time."""

    def __init__(self, nft: Nft, service_of: Callable[[Frontend], str | None], on_loop: OnLoop) -> None:
        self.nft = nft
        self.service_of = service_of
        self.on_loop = on_loop

    def collect(self) -> Iterator[Metric]:
        counters = self.nft.read_counters(FRONTEND_COUNTERS.values())  # blocking: here, in the metrics thread
        yield from self.on_loop(lambda: self._families(counters))

    def _families(self, counters: Counters) -> list[Metric]:
        packets = CounterMetricFamily("portico_frontend_packets", "Packets from clients to a frontend",
                                      labels=FRONTEND_LABELS)
        octets = CounterMetricFamily("portico_frontend_bytes", "Bytes from clients to a frontend",
                                     labels=FRONTEND_LABELS)
        dropped = CounterMetricFamily("portico_frontend_dropped_packets",
                                      "Packets dropped by loadBalancerSourceRanges", labels=FRONTEND_LABELS)
        refused = CounterMetricFamily("portico_refused_packets",
                                      "Packets to a VIP no rule forwards (no ready endpoint, unserved port), "
                                      "answered with a TCP reset or ICMP unreachable", labels=["family"])
        limited = CounterMetricFamily("portico_limit_drops", "Packets a TrafficPolicy limit dropped or refused, "
                                      "per frontend and limit", labels=[*FRONTEND_LABELS, "limit"])
        for elements in counters.elements.values():
            for (vip, protocol, port), (n_packets, n_bytes) in elements.items():
                fe = Frontend(ipaddress.ip_address(vip), protocol, int(port))
                service = self.service_of(fe)
                if service is None:
                    continue  # removed since: its counters go with it
                packets.add_metric(_labels(fe, service), n_packets)
                octets.add_metric(_labels(fe, service), n_bytes)
                if (drops := counters.named.get(dropped_counter(fe))) is not None:
                    dropped.add_metric(_labels(fe, service), drops[0])
                for kind in LIMIT_KINDS:
                    if (drops := counters.named.get(limit_counter(fe, kind))) is not None:
                        limited.add_metric([*_labels(fe, service), kind], drops[0])
        for family, name in REFUSED.items():
            if name in counters.named:
                refused.add_metric([f"IPv{family}"], counters.named[name][0])
        heartbeats = CounterMetricFamily("portico_announce_heartbeats_dropped",
                                         "Datagrams to the heartbeat port the kernel dropped: not from a peer's "
                                         "address", value=counters.named.get(
                                             HEARTBEATS_DROPPED, (0, 0))[0])
        return [packets, octets, dropped, limited, refused, heartbeats]


class _OnLoop(Collector):
    def __init__(self, inner: Collector, on_loop: OnLoop) -> None:
        self.inner, self.on_loop = inner, on_loop

    def collect(self) -> Iterator[Metric]:
        yield from self.on_loop(lambda: list(self.inner.collect()))


class _Backends(Collector):
    """Per frontend, the backends this node's rules send new flows to (ready, and healthy where monitored): 0 on
    every node is a VIP that refuses everyone (the "no backend" alert). A Gateway's frontends are left out: HAProxy
    serves them, its pools are its routes' backends."""

    def __init__(self, applied: Mapping[Frontend, tuple[str, FrontendPolicy]]) -> None:
        self.applied = applied

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("portico_frontend_backends", "Backends a frontend's rules send new flows to on "
                                  "this node", labels=FRONTEND_LABELS)
        for fe, (service, policy) in self.applied.items():  # on the event loop, at every scrape: no sorting
            if not policy.deliver_local:
                gauge.add_metric(_labels(fe, service), len(policy.backends))
        yield gauge


class _Problems(Collector):
    def __init__(self, problems: Callable[[], Mapping[str, list[str]]]) -> None:
        self.problems = problems

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("portico_agent_forwarding_problems",
                                  "What this node cannot honour for a Service (details in its events)",
                                  labels=["service"])
        for service, items in sorted(self.problems().items()):
            if items:
                gauge.add_metric([service], len(items))
        yield gauge


class _HAProxy(Collector):
    """How the node's HAProxy took its changes: reloads (routes, listeners, certificates) and runtime-API updates
    (endpoints), so an operator sees that endpoint churn costs no reload."""

    def __init__(self, haproxy: HAProxy) -> None:
        self.haproxy = haproxy

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("portico_haproxy_reloads", "Seamless reloads of the node's HAProxy",
                                  value=self.haproxy.reloads)
        yield CounterMetricFamily("portico_haproxy_runtime_updates",
                                  "Changes made through HAProxy's runtime API, without a reload",
                                  value=self.haproxy.updates)


def _per_vip(name: str, documentation: str, services: Mapping[IPAddress, Iterable[str]]) -> GaugeMetricFamily:
    """A gauge of 1 per (Service, VIP), VIPs in address order."""
    gauge = GaugeMetricFamily(name, documentation, labels=["service", "vip"])
    for vip in sorted(services, key=lambda a: (a.version, int(a))):
        for service in services[vip]:
            gauge.add_metric([service, str(vip)], 1)
    return gauge


class _Announcements(Collector):
    def __init__(self, l2: L2Announcer) -> None:
        self.l2 = l2

    def collect(self) -> Iterator[Metric]:
        announced = _per_vip("portico_l2_announced", "1 for each VIP this node answers ARP/NDP for",
                             {vip: entry.services if (entry := self.l2.vips.get(vip)) else ()
                              for vip in self.l2.owned})
        eligible = GaugeMetricFamily("portico_l2_eligible_vips", "VIPs this node may answer for (its data path "
                                     "is ready for them)", value=len(self.l2.mesh.eligible))
        peers = GaugeMetricFamily("portico_announce_peers_alive", "Other agents heard from within the dead "
                                  "interval", value=len(self.l2.mesh.alive()))
        changes = CounterMetricFamily("portico_l2_ownership_changes", "VIPs this node started or stopped "
                                      "answering for", value=self.l2.changes)
        rejected = CounterMetricFamily("portico_announce_heartbeats_rejected", "Datagrams on the heartbeat port "
                                       "not believed, by reason (malformed, no-key, unauthenticated, unknown-peer, "
                                       "ttl, replayed, unacknowledged)", labels=["reason"])
        for reason, count in sorted(self.l2.mesh.rejected.items()):
            rejected.add_metric([reason], count)
        keys = GaugeMetricFamily("portico_announce_heartbeat_keys", "Heartbeat keys held (0: this node announces "
                                 "nothing in layer 2)", value=len(self.l2.mesh.keys))
        yield from (announced, eligible, peers, changes, rejected, keys)


class _Health(Collector):
    def __init__(self, health: AgentHealth, liveness: NodeLiveness) -> None:
        self.health, self.liveness = health, liveness

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("portico_backend_up", "1 while this node's monitor finds a local endpoint healthy, "
                               f"0 while down (at most {MAX_BACKEND_SERIES} series a node)",
                               labels=["service", "endpoint"])
        series = unreported = 0
        for target, monitor in self.health.checker.monitors.items():
            if series >= MAX_BACKEND_SERIES:
                unreported += 1
                continue
            where = f"[{target.ip}]" if target.ip.version == 6 else str(target.ip)
            up.add_metric([target.service, f"{where}:{target.port}" if target.port else where], int(monitor.up))
            series += 1
        yield up
        yield GaugeMetricFamily("portico_backend_up_unreported", "Monitored endpoints left out of "
                                "portico_backend_up by its cap", value=unreported)
        transitions = CounterMetricFamily("portico_health_transitions", "Local endpoints going down or up, by "
                                          "Service", labels=["service", "to"])
        for (service, to), count in sorted(self.health.transitions.items()):
            transitions.add_metric([service, to], count)
        yield transitions
        yield CounterMetricFamily("portico_health_probes", "Health probes started by this node",
                                  value=self.health.checker.probes)
        yield GaugeMetricFamily("portico_nodes_out_of_rotation", "Peers whose endpoints this node keeps out of new "
                                "flows (their heartbeats stopped, or they are in their hold-down)",
                                value=len(self.liveness.out))


class _Bgp(Collector):
    def __init__(self, bgp: BgpAnnouncements) -> None:
        self.bgp = bgp

    def collect(self) -> Iterator[Metric]:
        advertised = _per_vip("portico_bgp_advertised", "1 for each VIP this node advertises over BGP",
                              self.bgp.advertised)
        withheld = GaugeMetricFamily("portico_bgp_withheld_vips", "VIPs this node would advertise but cannot serve "
                                     "now (reasons in the Service's events)", value=len(self.bgp.withheld))
        sessions = GaugeMetricFamily("portico_bgp_session_established", "1 while this node's session with the "
                                     "BGPPeer is established", labels=["peer"])
        bfd = GaugeMetricFamily("portico_bfd_session_up", "1 while this node's BFD session with the BGPPeer is up",
                                labels=["peer"])
        for peer, session in sorted(self.bgp.speaker.sessions.items()):
            state = self.bgp.states.get(peer)
            sessions.add_metric([peer], 1 if state is not None and state.state == "Established" else 0)
            if (bfd_state := self.bgp.bfd.state(session.address)) is not None:
                bfd.add_metric([peer], 1 if bfd_state == "Up" else 0)
        yield from (advertised, withheld, sessions, bfd)
