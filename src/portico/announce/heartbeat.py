"""Agents heartbeat each other over UDP on the node network, so each knows within a fraction of a
second which peers are alive and which VIPs each may announce.

Every beat carries the sender's whole eligible set (packed addresses), so all agents rank the same
candidates. A peer that stays silent for `dead_after` is dead. (Who advertises what over BGP is not
gossiped: each node reports its own in its PorticoNode, and the controller gathers them.)

Beats also carry the health of the sender's own endpoints: the generation of its view (its down endpoints,
and its gated ones: pods whose Portico readiness gate waits for every node to forward to them) and, to each
peer that has not acknowledged that generation, the sets themselves. Each beat echoes the generation of the
receiver's view that the sender has *programmed* (its rules reflect it), which is the acknowledgement: the
sets are resent on every beat until acked, so a lost datagram costs one interval, a steady cluster pays 8
bytes a beat for health, and a node knows when every peer forwards to a gated pod (agent.readiness).

Nothing on the LAN is trusted (docs/security.md). A datagram is believed only when, in this order:
  1. it has the size and header of a beat, and an HMAC-SHA256 under a cluster key (from a Secret; every key
     held signs, so keys rotate by adding one, then removing the old) — checked before anything is decoded;
  2. it arrived with TTL / hop limit 255 when the sender shares our segment (GTSM, RFC 5082: no router
     forwarded it);
  3. it comes from the address the sender's Node object gives it, to the one this node listens on;
  4. it is fresh: the sender's boot (its start time) and sequence are newer than any accepted from it, and it
     echoes *our* boot, which a peer learns only from our beats. A beat captured before we last started
     cannot echo it, so a replay is refused even by a peer that has just restarted and remembers nothing.
Rejections are counted by reason. The transport is a socket of our own (ancillary data for the TTL); the
wire format and the checks are pure functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from portico.announce.links import connected_networks
from portico.health.checks import ByNode, Endpoint
from portico.ipam.blocks import IPAddress
from portico.ports import HEARTBEAT_PORT

log = logging.getLogger(__name__)

HEARTBEAT_KEY_SECRET = "portico-heartbeat-key"  # in the agents' namespace; created by the controller
INTERVAL = 0.1  # seconds between beats
DEAD_AFTER = 0.3  # silence that makes a peer dead: three beats
MAX_RESTART_HOLD = 120.0  # the longest a restarting peer is believed silent (what a beat may ask for)
MAX_BEAT_BYTES = 65_000  # one UDP datagram: about 16,000 IPv4 or 4,000 IPv6 eligible addresses
MAGIC = b"PTB2"  # PTB1 had no health
MAC_BYTES = 32  # HMAC-SHA256
MAX_KEYS = 2  # during a rotation: the old key and the new one
MIN_KEY_BYTES = 16
GTSM_TTL = 255
_HEADER = struct.Struct("!4sB")  # magic, number of MACs
# The receiver's boot as the sender last heard it (0: not yet), and the generation of the receiver's health
# the sender holds.
_ECHO = struct.Struct("!QQ")
IP_RECVTTL = 12  # <linux/in.h>; not in Python's socket module
READ_BATCH = 64


class Beat(msgspec.Struct, array_like=True, frozen=True):
    node: str
    boot: int  # the agent's start time (ns): a restarted peer is a new peer, and a later one
    seq: int
    ipv4: bytes = b""  # eligible addresses, 4 bytes each
    ipv6: bytes = b""  # 16 bytes each
    health: int = 0  # the generation of the sender's health view (0: nothing down or gated, as at start)
    down: list[tuple[str, bytes, bytes]] | None = None  # its down set, when sent: (Service, IPv4 and IPv6 entries)
    gated: list[tuple[str, bytes, bytes]] | None = None  # its gated set, sent with the down set (same entries)
    restart: int = 0  # ms, in a last beat: the sender is restarting; hold what it said for its next incarnation


Down = dict[str, frozenset[Endpoint]]  # Service -> some of its endpoints (port 0: the whole address)
_V4_ENTRY, _V6_ENTRY = struct.Struct("!4sH"), struct.Struct("!16sH")


class Rejected(Exception):
    """A datagram that is not believed; `reason` labels the metric."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- the wire format (pure) -------------------------------------------------------------------------------
def _pack(addresses: Iterable[IPAddress], version: int) -> bytes:
    return b"".join(a.packed for a in sorted(a for a in addresses if a.version == version))


def _unpack(v4: bytes, v6: bytes) -> frozenset[IPAddress]:
    if len(v4) % 4 or len(v6) % 16:
        raise ValueError("truncated address list")
    return frozenset([*(ipaddress.IPv4Address(v4[i:i + 4]) for i in range(0, len(v4), 4)),
                      *(ipaddress.IPv6Address(v6[i:i + 16]) for i in range(0, len(v6), 16))])


def _pack_endpoints(down: Down) -> list[tuple[str, bytes, bytes]]:
    out = []
    for service, endpoints in sorted(down.items()):
        ordered = sorted(endpoints, key=lambda e: (e[0].version, int(e[0]), e[1]))
        out.append((service, b"".join(_V4_ENTRY.pack(ip.packed, port) for ip, port in ordered if ip.version == 4),
                    b"".join(_V6_ENTRY.pack(ip.packed, port) for ip, port in ordered if ip.version == 6)))
    return out


def _unpack_endpoints(down: list[tuple[str, bytes, bytes]]) -> Down:
    out: Down = {}
    for service, v4, v6 in down:
        if len(v4) % _V4_ENTRY.size or len(v6) % _V6_ENTRY.size:
            raise ValueError("truncated endpoint list")
        out[service] = frozenset([
            *((ipaddress.IPv4Address(a), p) for a, p in _V4_ENTRY.iter_unpack(v4)),
            *((ipaddress.IPv6Address(a), p) for a, p in _V6_ENTRY.iter_unpack(v6))])
    return out


def encode_body(node: str, boot: int, seq: int, eligible: Iterable[IPAddress], *, health: int = 0,
                down: Down | None = None, gated: Down | None = None, restart: int = 0) -> bytes:
    """`down` and `gated` go together (a view), or not at all."""
    view = (_pack_endpoints(down), _pack_endpoints(gated or {})) if down is not None else (None, None)
    return msgspec.msgpack.encode(Beat(node, boot, seq, _pack(eligible, 4), _pack(eligible, 6), health,
                                       down=view[0], gated=view[1], restart=restart))


def decode_body(data: bytes) -> tuple[Beat, frozenset[IPAddress], tuple[Down, Down] | None]:
    """(beat, eligible, (down, gated) endpoints if sent). Raises msgspec.DecodeError or ValueError on anything
    that is not a beat."""
    beat = msgspec.msgpack.decode(data, type=Beat)
    view = ((_unpack_endpoints(beat.down), _unpack_endpoints(beat.gated or [])) if beat.down is not None
            else None)
    return beat, _unpack(beat.ipv4, beat.ipv6), view


class Signer:
    """Seals one body for many receivers: datagram = MAGIC | n | n MACs | echo | body, each MAC an
    HMAC-SHA256 of MAGIC | body | echo under one key. The body is hashed once per key, not once per peer."""

    def __init__(self, keys: Sequence[bytes], body: bytes) -> None:
        self.body = body
        self._started = []
        for key in keys:
            h = hmac.new(key, MAGIC, hashlib.sha256)
            h.update(body)
            self._started.append(h)

    def seal(self, echo: int, health_echo: int = 0) -> bytes:
        trailer = _ECHO.pack(echo, health_echo)
        macs = []
        for started in self._started:
            h = started.copy()
            h.update(trailer)
            macs.append(h.digest())
        return _HEADER.pack(MAGIC, len(macs)) + b"".join(macs) + trailer + self.body


def open_sealed(data: bytes, keys: Sequence[bytes]) -> tuple[tuple[int, int], bytes]:
    """((echoed boot, echoed health generation), body) of a datagram sealed under one of `keys`; raises
    Rejected. Nothing is decoded before the
    MAC is checked, and the check costs one HMAC per key whatever the datagram says."""
    if len(data) > MAX_BEAT_BYTES or len(data) < _HEADER.size:
        raise Rejected("malformed")
    magic, n = _HEADER.unpack_from(data)
    start = _HEADER.size + n * MAC_BYTES
    if magic != MAGIC or not 1 <= n <= MAX_KEYS or len(data) < start + _ECHO.size:
        raise Rejected("malformed")
    if not keys:
        raise Rejected("no-key")
    trailer, body = data[start:start + _ECHO.size], data[start + _ECHO.size:]
    macs = [data[_HEADER.size + i * MAC_BYTES:_HEADER.size + (i + 1) * MAC_BYTES] for i in range(n)]
    for key in keys:
        h = hmac.new(key, MAGIC, hashlib.sha256)
        h.update(body)
        h.update(trailer)
        expected = h.digest()
        if any(hmac.compare_digest(expected, mac) for mac in macs):
            return _ECHO.unpack(trailer), body
    raise Rejected("unauthenticated")


def usable_keys(values: Iterable[bytes]) -> tuple[tuple[bytes, ...], str | None]:
    """The keys to use from a Secret's values (sorted by name), and what is wrong with the rest, if anything."""
    keys = tuple(v for v in values if len(v) >= MIN_KEY_BYTES)
    problem = None
    if len(keys) != len(list(values)):
        problem = f"keys shorter than {MIN_KEY_BYTES} bytes are ignored"
    if len(keys) > MAX_KEYS:
        keys, problem = keys[:MAX_KEYS], f"only the first {MAX_KEYS} keys are used"
    return keys, problem


# -- the mesh ---------------------------------------------------------------------------------------------
@dataclass
class Peer:
    address: IPAddress
    port: int = HEARTBEAT_PORT
    on_link: bool = False  # shares a segment with this node: its beats must arrive with TTL 255
    boot: int = 0  # the newest authenticated boot heard from it (what our beats echo to it)
    seq: int = -1  # the newest sequence accepted from that boot
    eligible: frozenset[IPAddress] = frozenset()
    health: int = 0  # the generation of its health view we hold
    down: Down = field(default_factory=dict)  # its endpoints that are down
    gated: Down = field(default_factory=dict)  # its gated endpoints (ready for us, waiting on their gate)
    programmed: int = 0  # the generation of its view our rules reflect (echoed to it: our acknowledgement)
    acked: int = 0  # the generation of our view its rules reflect
    heard: float | None = None  # monotonic time of the last accepted beat; None: not alive
    hold_until: float = 0.0  # it said it is restarting: until then (monotonic) what it said stands, until its
    # next incarnation says which VIPs it is eligible for
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.heard is not None


# on_change(peer name, what happened): called when a peer comes, goes, or changes its eligible set
ChangeCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class HeldView:
    """A peer's health view as this node held it when a sync began: what that sync programmed."""
    boot: int
    health: int
    gated: Down


class HeartbeatMesh:
    def __init__(self, node: str, on_change: ChangeCallback, *, port: int = HEARTBEAT_PORT,
                 interval: float = INTERVAL, dead_after: float = DEAD_AFTER) -> None:
        self.node, self.port, self.interval, self.dead_after = node, port, interval, dead_after
        self.on_change = on_change
        self.on_health: Callable[[str, set[str]], None] = lambda peer, services: None  # its view changed
        self.on_liveness: Callable[[], None] = lambda: None  # a peer came, went, or this node settled
        self.peers: dict[str, Peer] = {}
        self.eligible: frozenset[IPAddress] = frozenset()
        self.down: Down = {}  # this node's endpoints that are down, by Service
        self.gated: Down = {}  # this node's gated endpoints, by Service
        self.health = 0  # the generation of this node's view (both sets)
        self.keys: tuple[bytes, ...] = ()
        self.address: IPAddress | None = None  # where this node listens and sends from: its InternalIP
        self.started: float | None = None  # when the socket was bound with a key to sign with
        self.rejected: Counter[str] = Counter()  # reason -> datagrams not believed
        # Set before stopping when the stop is a restart (agent.restart): the last beat asks peers to hold this
        # node's VIPs and view that long, instead of handing them over.
        self.restart_hold = 0.0
        self.boot = time.time_ns()
        self._seq = 0
        self._sock: socket.socket | None = None
        self._wake = asyncio.Event()
        self._rebind = asyncio.Event()

    # -- what the announcer reads --------------------------------------------------------------------
    @property
    def settled(self) -> bool:
        """True once every live peer has had the time to be heard: only then may this node claim VIPs. Never
        without a key: unable to hear its peers, a node would claim everything."""
        return self.started is not None and bool(self.keys) and time.monotonic() - self.started >= self.dead_after

    def alive(self) -> dict[str, Peer]:
        return {name: p for name, p in self.peers.items() if p.alive}

    # -- what the agent sets ---------------------------------------------------------------------------
    def set_peers(self, peers: dict[str, tuple[IPAddress, int]]) -> None:
        """The other nodes running an agent, and where each takes heartbeats (from their PorticoNodes)."""
        current = {name: (p.address, p.port) for name, p in self.peers.items()}
        wanted = {name: endpoint for name, endpoint in peers.items() if name != self.node}
        if wanted == current:
            return
        networks = connected_networks()
        for name in set(self.peers) - set(wanted):
            peer = self.peers.pop(name)
            if peer.expiry:
                peer.expiry.cancel()
            if peer.alive:
                self._changed(name, "removed from the cluster")
        for name, (address, port) in wanted.items():
            peer = self.peers.setdefault(name, Peer(address))
            peer.address, peer.port = address, port
            peer.on_link = any(address in n for n in networks)

    def set_address(self, address: IPAddress | None) -> None:
        """This node's InternalIP: the socket is bound to it alone."""
        if address != self.address:
            self.address = address
            self._rebind.set()

    def set_keys(self, keys: tuple[bytes, ...]) -> None:
        if keys != self.keys:
            if not keys:
                log.error("no heartbeat key: this node cannot hear its peers and will announce nothing in layer 2")
            self.keys = keys
            self._rebind.set()

    def set_down(self, down: Down) -> None:
        """This node's down endpoints; a change is sent at once."""
        if down != self.down:
            self.down = dict(down)
            self.health += 1
            self._wake.set()

    def set_gated(self, gated: Down) -> None:
        """This node's gated endpoints; a change is sent at once."""
        if gated != self.gated:
            self.gated = dict(gated)
            self.health += 1
            self._wake.set()

    def down_for(self, service: str) -> ByNode:
        """Each node's down endpoints of this Service, by node (each judges its own)."""
        return self._by_node(service, self.down, {name: p.down for name, p in self.peers.items()})

    def gated_for(self, service: str) -> ByNode:
        """Each node's gated endpoints of this Service, by node (each speaks for its own pods)."""
        return self._by_node(service, self.gated, {name: p.gated for name, p in self.peers.items()})

    def _by_node(self, service: str, own: Down, peers: dict[str, Down]) -> ByNode:
        views = {self.node: own, **peers}
        return {node: endpoints for node, view in views.items() if (endpoints := view.get(service))}

    def held(self) -> dict[str, HeldView]:
        """What this node holds of each live peer's view, as a sync begins (`acknowledge` after it)."""
        return {name: HeldView(p.boot, p.health, p.gated) for name, p in self.peers.items() if p.alive}

    def acknowledge(self, programmed: dict[str, HeldView]) -> None:
        """These views are in our rules now: tell their senders at once."""
        for name, view in programmed.items():
            peer = self.peers.get(name)
            if peer is not None and peer.boot == view.boot and peer.programmed != view.health:
                peer.programmed = view.health
                self._wake.set()

    def set_eligible(self, eligible: frozenset[IPAddress]) -> None:
        """This node's eligible VIPs; a change is sent at once, not at the next beat."""
        if eligible != self.eligible:
            self.eligible = eligible
            self._wake.set()

    # -- running ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                self._rebind.clear()
                if self.address is None or not self.keys:
                    self._close()
                    await self._rebind.wait()
                    continue
                if self._sock is None or self._sock.getsockname()[0] != str(self.address):
                    self._open(self.address)
                while not self._rebind.is_set():
                    self._send()
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.interval)
        finally:  # a last beat: peers hold what this node said while it restarts, else take over at once
            if not self.restart_hold:
                self.eligible = frozenset()
            if self._sock is not None:
                self._send(restart=round(self.restart_hold * 1000))
            self._close()
            for peer in self.peers.values():
                if peer.expiry:
                    peer.expiry.cancel()

    def _open(self, address: IPAddress) -> None:
        self._close()
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, GTSM_TTL)
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, GTSM_TTL)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.setblocking(False)
        sock.bind((str(address), self.port))  # not the wildcard: only what is sent to the node's own address
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        self.started = time.monotonic()
        # Settled once every live peer has had the time to be heard: then the announcer may claim.
        asyncio.get_running_loop().call_later(self.dead_after, self._changed, self.node, "listened long enough")
        log.info("heartbeats on %s port %d", address, self.port)

    def _close(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self.started = None

    def _send(self, restart: int = 0) -> None:
        assert self._sock is not None
        self._seq += 1
        eligible: Iterable[IPAddress] = self.eligible
        body = encode_body(self.node, self.boot, self._seq, eligible, health=self.health, restart=restart)
        if _oversized(body):
            log.error("%d eligible addresses do not fit one heartbeat; announcing none in layer 2",
                      len(self.eligible))
            eligible = ()
            body = encode_body(self.node, self.boot, self._seq, eligible, health=self.health, restart=restart)
        signer = Signer(self.keys, body)
        with_down: Signer | None = None  # for the peers that do not hold our latest down set
        for peer in self.peers.values():
            if peer.address.version != self.address_version:
                continue
            sending = signer
            if peer.acked != self.health:
                if with_down is None:
                    full = encode_body(self.node, self.boot, self._seq, eligible, health=self.health, down=self.down,
                                       gated=self.gated, restart=restart)
                    if _oversized(full):
                        log.error("this node's %d down and gated endpoints do not fit one heartbeat; peers keep the "
                                  "last view that did", sum(len(e) for e in (*self.down.values(),
                                                                              *self.gated.values())))
                    with_down = Signer(self.keys, full) if not _oversized(full) else signer
                sending = with_down
            try:
                self._sock.sendto(sending.seal(peer.boot, peer.programmed), (str(peer.address), peer.port))
            except OSError as e:  # e.g. our interface is down: peers will notice the silence
                log.debug("heartbeat to %s: %s", peer.address, e)

    @property
    def address_version(self) -> int:
        return self.address.version if self.address is not None else 0

    def _readable(self) -> None:
        """At most READ_BATCH datagrams a turn: under a flood, the agent's other work still gets the loop."""
        assert self._sock is not None
        space = socket.CMSG_SPACE(4)
        for _ in range(READ_BATCH):
            try:
                data, ancillary, _, addr = self._sock.recvmsg(MAX_BEAT_BYTES + 1, space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # an ICMP error for an earlier send, reported on the socket
                log.debug("heartbeat socket: %s", e)
                continue
            ttl = next((struct.unpack("i", d[:4])[0] for level, kind, d in ancillary
                        if (level, kind) in ((socket.IPPROTO_IP, socket.IP_TTL),
                                             (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT))), None)
            try:
                self.receive(data, addr[0], ttl)
            except Rejected as e:
                self.rejected[e.reason] += 1

    def receive(self, data: bytes, source: str, ttl: int | None) -> None:
        """Believe a datagram, or raise Rejected saying why not."""
        (echo, acked), body = open_sealed(data, self.keys)
        try:
            beat, eligible, view = decode_body(body)
        except (msgspec.DecodeError, ValueError):
            raise Rejected("malformed") from None  # authenticated, yet not a beat: a newer version?
        peer = self.peers.get(beat.node)
        if peer is None or _address(source) != peer.address:
            raise Rejected("unknown-peer")  # not a node of ours, or a key holder speaking for another
        if peer.on_link and ttl != GTSM_TTL:
            raise Rejected("ttl")
        if (beat.boot, beat.seq) <= (peer.boot, peer.seq):
            raise Rejected("replayed")
        restarted = peer.alive and beat.boot != peer.boot
        if beat.boot != peer.boot:  # a new incarnation: what we held of the old one's health is void
            self._forget_health(beat.node, peer)
        peer.boot, peer.seq = beat.boot, beat.seq  # echoed to it from now on
        if echo != self.boot:
            if restarted and peer.hold_until <= time.monotonic():
                self._expire(beat.node, "restarted")  # the new incarnation is believed once it echoes us
            self._wake.set()  # answer at once: our next beat echoes its boot
            raise Rejected("unacknowledged")
        came, now = not peer.alive, time.monotonic()
        if beat.restart:
            peer.hold_until = now + min(beat.restart / 1000, MAX_RESTART_HOLD)
            log.info("%s is restarting: holding its VIPs and view for up to %d ms", beat.node, beat.restart)
        elif eligible:
            peer.hold_until = 0.0  # its next incarnation is ready
        if peer.hold_until > now and not eligible:
            eligible = peer.eligible  # held (the last beat, or a next incarnation not ready yet)
        changed = eligible != peer.eligible
        # Not a reason to send at once if it lacks our view: it may hold it but not have programmed it yet.
        peer.eligible, peer.heard, peer.acked = eligible, now, acked
        if view is not None and beat.health != peer.health:
            services = changed_services(peer.down, view[0]) | changed_services(peer.gated, view[1])
            peer.health, (peer.down, peer.gated) = beat.health, view
            self.on_health(beat.node, services)  # acknowledged once the sync it starts has programmed it
        if peer.expiry:
            peer.expiry.cancel()
        peer.expiry = asyncio.get_running_loop().call_later(max(peer.hold_until - now, self.dead_after), self._expire,
                                                            beat.node)
        if came or restarted or changed:
            self._changed(beat.node, "came up" if came else "restarted" if restarted else "changed its VIPs")

    def _expire(self, name: str, why: str | None = None) -> None:
        peer = self.peers.get(name)
        if peer is None or peer.heard is None:
            return
        if peer.expiry:
            peer.expiry.cancel()
        silent = time.monotonic() - peer.heard
        peer.heard, peer.eligible, peer.expiry, peer.hold_until = None, frozenset(), None, 0.0
        self._forget_health(name, peer)
        self._changed(name, why or f"silent for {silent * 1000:.0f} ms")

    def _changed(self, name: str, what: str) -> None:
        self.on_change(name, what)
        self.on_liveness()

    def _forget_health(self, name: str, peer: Peer) -> None:
        changed = changed_services(peer.down, {}) | changed_services(peer.gated, {})
        peer.down, peer.gated, peer.health, peer.programmed, peer.acked = {}, {}, 0, 0, 0
        if changed:
            self.on_health(name, changed)


def changed_services(before: Down, after: Down) -> set[str]:
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}



def _oversized(body: bytes) -> bool:
    return len(body) + _HEADER.size + MAX_KEYS * MAC_BYTES + _ECHO.size > MAX_BEAT_BYTES


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
