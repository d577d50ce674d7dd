"""Layer-2 announcement: this node answers ARP/NDP for the VIPs it owns, and only those.

Ownership is `ranking.owners` over the live nodes' eligible sets (this node's own, and its peers' from
their heartbeats), recomputed on every change. Two rules keep two nodes from answering at once:
  * release at once: a VIP is dropped the moment a better node appears or this node stops being
    eligible (then its next beat, sent immediately, tells the others);
  * claim late: a VIP is claimed only once it has been in this node's beats for one interval, so a
    node this one now outranks has heard and released it first. A VIP whose owner died or withdrew
    is thus claimed at once (this node has long been eligible), with gratuitous ARP / unsolicited NA
    so neighbours move without waiting for their caches to go stale.
A fresh agent claims nothing until it has listened for a full `dead_after` (it must hear its peers).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from portico.announce import ranking
from portico.announce.heartbeat import HeartbeatMesh
from portico.announce.l2 import L2Responder
from portico.announce.links import LinkWatch, interface_state
from portico.ipam.blocks import IPAddress
from portico.ports import HEARTBEAT_PORT

log = logging.getLogger(__name__)

HOLD_DOWN_SECONDS = 5.0  # an interface we could not answer on is tried again after this long


@dataclass(frozen=True)
class L2Vip:
    """A VIP this node may answer for, as the agent sees it."""

    address: IPAddress
    services: tuple[str, ...]  # namespace/name of each Service using it
    interfaces: tuple[str, ...]  # where to answer
    ready: str | None  # None: its rules are in place (and, under ETP Local, a local endpoint is ready); else why not


# record(service key, event type, reason, message)
EventSink = Callable[[str, str, str, str], None]


class L2Announcer:
    def __init__(self, node: str, record: EventSink, *, heartbeat_port: int = HEARTBEAT_PORT) -> None:
        self.node = node
        self.record = record
        self.changed = asyncio.Event()  # set when the owners change; whoever reports on them clears it
        self.mesh = HeartbeatMesh(node, self._peer_changed, port=heartbeat_port)
        self.links = LinkWatch(self.recompute)
        self.vips: dict[IPAddress, L2Vip] = {}
        self.data_path_ready = False  # the agent's first full sync is done and its last sync did not fail
        self.owners: dict[IPAddress, str | None] = {}  # everyone's view, for status
        self.owned: set[IPAddress] = set()  # the VIPs this node answers for
        self.changes = 0
        self.interface_problems: dict[str, str] = {}  # interface -> what is wrong with it
        self._unusable: dict[str, tuple[float, str]] = {}  # interface -> (since when, why) we cannot answer there
        self._responders: dict[str, L2Responder] = {}
        self._published: dict[IPAddress, float] = {}  # VIP -> when it entered this node's beats
        self._news: dict[str, str] = {}  # peer -> what last happened to it
        self._last_owner: dict[IPAddress, str] = {}  # VIP -> the last other node that announced it
        self._later: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        try:
            await asyncio.gather(self.mesh.run(), self.links.run())
        finally:
            for responder in self._responders.values():
                responder.close()

    # -- inputs ----------------------------------------------------------------------------------------
    def set_node(self, address: IPAddress | None, peers: dict[str, tuple[IPAddress, int]]) -> None:
        """This node's InternalIP (heartbeats are sent from it) and the peers running an agent."""
        self.mesh.set_address(address)
        self.mesh.set_peers(peers)

    def set_keys(self, keys: tuple[bytes, ...]) -> None:
        self.mesh.set_keys(keys)

    # -- what it reports ---------------------------------------------------------------------------------
    @property
    def heartbeat_port(self) -> int:
        return self.mesh.port

    def heartbeat_endpoint(self) -> tuple[IPAddress, int] | None:
        return (self.mesh.address, self.mesh.port) if self.mesh.address is not None else None

    def unreachable(self) -> list[str]:
        """Peers not heard from (once this node has listened long enough to know)."""
        return sorted(n for n, p in self.mesh.peers.items() if not p.alive) if self.mesh.settled else []

    def set_vips(self, vips: dict[IPAddress, L2Vip], data_path_ready: bool) -> None:
        if vips != self.vips or data_path_ready != self.data_path_ready:
            self.vips, self.data_path_ready = vips, data_path_ready
            self.recompute()

    def _peer_changed(self, peer: str, what: str) -> None:
        self._news[peer] = what
        self.recompute()

    # -- the decision ------------------------------------------------------------------------------------
    def _eligible(self) -> frozenset[IPAddress]:
        if not (self.data_path_ready and self.mesh.settled):
            return frozenset()
        states = {i: interface_state(i) for v in self.vips.values() for i in v.interfaces}
        now = time.monotonic()
        self._unusable = {i: (t, why) for i, (t, why) in self._unusable.items() if now - t < HOLD_DOWN_SECONDS}
        self.interface_problems = {i: f"interface {i} is {s} on {self.node}" for i, s in states.items() if s != "up"}
        self.interface_problems.update({i: why for i, (_, why) in self._unusable.items()})
        return frozenset(v.address for v in self.vips.values()
                         if v.ready is None and any(i not in self.interface_problems for i in v.interfaces))

    def _cannot_answer(self, interface: str, why: str) -> None:
        """A responder could not open or send: not eligible on that interface for a while, so a peer answers."""
        if interface not in self._unusable:
            log.error("%s on %s; not announcing there for %.0f s", why, self.node, HOLD_DOWN_SECONDS)
        self._unusable[interface] = (time.monotonic(), why)
        asyncio.get_running_loop().call_soon(self.recompute)

    def recompute(self) -> None:
        now = time.monotonic()
        eligible = self._eligible()
        for vip in eligible - self.mesh.eligible:
            self._published[vip] = now
        for vip in set(self._published) - eligible:
            del self._published[vip]
        self.mesh.set_eligible(eligible)
        view = {name: peer.eligible for name, peer in self.mesh.alive().items()}
        view[self.node] = eligible
        owners = ranking.owners(self.vips, view)
        wait = 0.0
        for vip, node in owners.items():
            if node == self.node and vip not in self.owned:
                listened = now - self._published[vip]
                if listened < self.mesh.interval:  # claim late: the beat saying so must reach the others first
                    wait = max(wait, self.mesh.interval - listened)
                else:
                    self._claim(vip, self._why_mine(vip, view))
            elif node != self.node and vip in self.owned:
                self._release(vip, node if vip in eligible else None)
        for vip in self.owned - set(owners):
            self._release(vip, None)
        changed = owners != self.owners
        for vip, node in self.owners.items():
            if node not in (None, self.node):
                self._last_owner[vip] = node
        self.owners = owners
        self._program_responders()
        if wait and self._later is None:
            self._later = asyncio.get_running_loop().call_later(wait, self._recompute_later)
        if changed:
            self.changed.set()

    def _recompute_later(self) -> None:
        self._later = None
        self.recompute()

    def _why_mine(self, vip: IPAddress, view: dict[str, frozenset[IPAddress]]) -> str:
        previous = self._last_owner.get(vip)
        if previous is None:
            return "first announcer"
        if previous not in view:
            return f"{previous} is down: {self._news.get(previous, 'not heard')}"
        if vip not in view[previous]:
            return f"{previous} is no longer eligible"
        return f"outranks {previous}"

    def _claim(self, vip: IPAddress, why: str) -> None:
        self.owned.add(vip)
        self.changes += 1
        message = f"{self.node} answers ARP/NDP for {vip} ({why})"
        log.info("%s", message)
        for service in self.vips[vip].services:
            self.record(service, "Normal", "AnnouncerChanged", message)
        self._program_responders()
        for interface in self.vips[vip].interfaces:
            responder = self._responders.get(interface)
            if responder is not None:
                responder.announce({vip})

    def _release(self, vip: IPAddress, successor: str | None) -> None:
        """successor: the node that outranks this one; None when this node is no longer eligible."""
        self.owned.discard(vip)
        self.changes += 1
        entry = self.vips.get(vip)
        if successor is not None:
            why = f"{successor} ranks higher"
        elif entry is None:
            why = "it is no longer announced in layer 2 here"
        else:
            why = (entry.ready or "; ".join(self.interface_problems.values())
                   or "its data path is not ready (the agent is starting, or its last sync failed)")
        message = f"{self.node} stopped answering for {vip}: {why}"
        log.info("%s", message)
        for service in entry.services if entry else ():
            self.record(service, "Normal" if successor else "Warning", "AnnouncementWithdrawn", message)

    def _program_responders(self) -> None:
        wanted: dict[str, set[IPAddress]] = {}
        for vip in self.owned:
            entry = self.vips.get(vip)
            for interface in entry.interfaces if entry else ():
                wanted.setdefault(interface, set()).add(vip)
        for interface in set(self._responders) - set(wanted):
            self._responders.pop(interface).close()
        for interface, vips in wanted.items():
            responder = self._responders.get(interface)
            recreated = responder is not None and not responder.current()
            if recreated:
                log.info("%s was recreated; answering on the new one", interface)
                self._responders.pop(interface).close()
                responder = None
            if responder is None:
                responder = L2Responder(interface, self._cannot_answer)
                try:
                    responder.open()
                except OSError as e:
                    self._cannot_answer(interface, f"cannot answer on {interface}: {e}")
                    continue
                self._responders[interface] = responder
                if recreated:  # neighbours may have lost us with the old interface
                    responder.announce(vips)
            responder.owned = frozenset(vips)
