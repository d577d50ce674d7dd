"""BFD (RFC 5880, single hop RFC 5881, asynchronous mode): so the router drops a node in a few hundred
milliseconds when the node's link or the node dies, instead of after a BGP hold time (3 s at the least).

GoBGP has no BFD, so the agent runs the node's end itself: one small UDP session per BGP peer that asks
for it, the router's BFD (BIRD, FRR, any vendor's) at the other end. It runs in the agent's event loop
on purpose: when the agent dies its BFD goes silent and the router withdraws the node's routes, the same
fail-safe as its BGP sessions. The state machine is pure (`BfdSession`); `BfdEndpoint` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
import time
from dataclasses import dataclass, field

from portico.ipam.blocks import IPAddress

log = logging.getLogger(__name__)

PORT = 3784  # single-hop control packets
SOURCE_PORTS = (49152, 65535)  # RFC 5881 4: the source port range
TTL = 255  # RFC 5881 5 (GTSM): sent with 255, accepted only with 255
SLOW_TX_US = 1_000_000  # RFC 5880 6.8.3: at least one second while the session is not up
ADMIN_DOWN, DOWN, INIT, UP = 0, 1, 2, 3
STATE_NAMES = {ADMIN_DOWN: "AdminDown", DOWN: "Down", INIT: "Init", UP: "Up"}
DIAG_NONE, DIAG_EXPIRED, DIAG_NEIGHBOR_DOWN = 0, 1, 3
IP_RECVTTL = 12  # Linux <linux/in.h>; not in Python's socket module
_FORMAT = "!BBBBIIIII"
LENGTH = struct.calcsize(_FORMAT)  # 24: no authentication section


@dataclass(frozen=True)
class Packet:
    state: int
    my_discriminator: int
    your_discriminator: int
    desired_min_tx_us: int
    required_min_rx_us: int
    detect_mult: int
    diag: int = DIAG_NONE
    poll: bool = False
    final: bool = False

    def encode(self) -> bytes:
        flags = self.state << 6 | self.poll << 5 | self.final << 4
        return struct.pack(_FORMAT, 1 << 5 | self.diag, flags, self.detect_mult, LENGTH, self.my_discriminator,
                           self.your_discriminator, self.desired_min_tx_us, self.required_min_rx_us, 0)


def decode(data: bytes) -> Packet | None:
    """A control packet, or None for anything RFC 5880 6.8.6 says to discard (we use no authentication)."""
    if len(data) < LENGTH:
        return None
    vers_diag, flags, mult, length, mine, yours, tx, rx, _ = struct.unpack_from(_FORMAT, data)
    if vers_diag >> 5 != 1 or length < LENGTH or length > len(data) or mult == 0 or mine == 0:
        return None
    if flags & 0b111:  # authentication (A), demand (D) or multipoint (M): not supported
        return None
    state = flags >> 6
    if yours == 0 and state not in (DOWN, ADMIN_DOWN):
        return None
    return Packet(state, mine, yours, tx, rx, mult, vers_diag & 0x1F, bool(flags & 0x20), bool(flags & 0x10))


@dataclass
class BfdSession:
    """One session's state machine (RFC 5880 6.8). Times in seconds (monotonic), intervals in microseconds."""

    local_discriminator: int
    desired_min_tx_us: int
    required_min_rx_us: int
    detect_mult: int
    state: int = DOWN
    diag: int = DIAG_NONE
    remote_discriminator: int = 0
    remote_state: int = DOWN
    remote_min_rx_us: int = 1
    remote_desired_tx_us: int = 0
    remote_detect_mult: int = 0
    poll: bool = False  # a poll sequence is running (our timers changed)
    last_rx: float = 0.0
    changes: list[tuple[int, int]] = field(default_factory=list)  # (old, new) state changes not yet reported

    def _set_state(self, new: int, diag: int = DIAG_NONE) -> None:
        if new != self.state:
            self.changes.append((self.state, new))
            self.state, self.diag = new, diag
            self.poll = True  # our advertised timers change with Up (6.8.3): let the peer confirm

    @property
    def advertised_tx_us(self) -> int:
        return self.desired_min_tx_us if self.state == UP else max(self.desired_min_tx_us, SLOW_TX_US)

    def receive(self, packet: Packet, now: float) -> bool:
        """Update from a packet; True when it asks for an immediate answer (its Poll bit: we send Final)."""
        if packet.your_discriminator not in (0, self.local_discriminator):
            return False
        self.remote_discriminator = packet.my_discriminator
        self.remote_state = packet.state
        self.remote_min_rx_us = packet.required_min_rx_us
        self.remote_desired_tx_us = packet.desired_min_tx_us
        self.remote_detect_mult = packet.detect_mult
        self.last_rx = now
        if packet.final:
            self.poll = False
        if packet.state == ADMIN_DOWN:
            if self.state != DOWN:
                self._set_state(DOWN, DIAG_NEIGHBOR_DOWN)
        elif self.state == DOWN:
            if packet.state == DOWN:
                self._set_state(INIT)
            elif packet.state == INIT:
                self._set_state(UP)
        elif self.state == INIT:
            if packet.state in (INIT, UP):
                self._set_state(UP)
        elif packet.state == DOWN:  # we are Up
            self._set_state(DOWN, DIAG_NEIGHBOR_DOWN)
        return packet.poll

    def detection_time(self) -> float:
        """How long without a packet before the session is declared down (6.8.4, asynchronous mode)."""
        return self.remote_detect_mult * max(self.required_min_rx_us, self.remote_desired_tx_us) / 1e6

    def check_expiry(self, now: float) -> None:
        if self.state in (INIT, UP) and now - self.last_rx > self.detection_time():
            self._set_state(DOWN, DIAG_EXPIRED)
            self.remote_discriminator = 0

    def tx_interval(self) -> float:
        """Seconds to the next periodic packet, jittered 75-100% (6.8.7)."""
        base = max(self.advertised_tx_us, self.remote_min_rx_us) / 1e6
        return base * random.uniform(0.75, 1.0)

    def packet(self, *, final: bool = False) -> Packet:
        return Packet(self.state, self.local_discriminator, self.remote_discriminator, self.advertised_tx_us,
                      self.required_min_rx_us, self.detect_mult, self.diag, poll=self.poll and not final,
                      final=final)


@dataclass(frozen=True)
class BfdSettings:
    interval_ms: int = 100  # our desired transmit and required receive interval
    multiplier: int = 3


class BfdEndpoint:
    """The node's BFD: a receive socket per family on port 3784 and a sending socket per session."""

    def __init__(self) -> None:
        self.sessions: dict[IPAddress, BfdSession] = {}
        self._senders: dict[IPAddress, asyncio.Task[None]] = {}
        self._wakes: dict[IPAddress, asyncio.Event] = {}
        self._sockets: dict[IPAddress, socket.socket] = {}
        self._receivers: dict[int, socket.socket] = {}

    def set_peers(self, peers: dict[IPAddress, BfdSettings]) -> None:
        for address, session in list(self.sessions.items()):
            settings = peers.get(address)
            if settings is None or (session.desired_min_tx_us, session.detect_mult) != (
                    settings.interval_ms * 1000, settings.multiplier):
                self._senders.pop(address).cancel()
                del self._wakes[address]
                self._sockets.pop(address).close()
                del self.sessions[address]
        for address, settings in peers.items():
            if address in self.sessions:
                continue
            self._open_receiver(address.version)
            self.sessions[address] = BfdSession(random.randrange(1, 2**32), settings.interval_ms * 1000,
                                                settings.interval_ms * 1000, settings.multiplier)
            self._sockets[address] = _sender(address)
            self._wakes[address] = asyncio.Event()
            self._senders[address] = asyncio.get_running_loop().create_task(self._send_forever(address))

    def state(self, address: IPAddress) -> str | None:
        session = self.sessions.get(address)
        return STATE_NAMES[session.state] if session is not None else None

    def close(self) -> None:
        self.set_peers({})
        loop = asyncio.get_running_loop()
        for sock in self._receivers.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._receivers.clear()

    def _open_receiver(self, version: int) -> None:
        if version in self._receivers:
            return
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if version == 4:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        sock.bind(("0.0.0.0" if version == 4 else "::", PORT))
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._receive, sock)
        self._receivers[version] = sock

    def _receive(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                data, ancillary, _, source = sock.recvmsg(128, socket.CMSG_SPACE(4))
                ttl = next((int.from_bytes(d[:4], "little") for level, kind, d in ancillary
                            if kind in (socket.IP_TTL, socket.IPV6_HOPLIMIT)), None)
                address = _address(source[0])
                session = self.sessions.get(address) if address is not None else None
                packet = decode(data)
                if session is None or packet is None or ttl != TTL or address is None:
                    continue
                if session.receive(packet, time.monotonic()):
                    self._send(address, final=True)
                if self._report(address, session):
                    self._wakes[address].set()  # tell the peer now, and at the new pace from now on

    def _report(self, address: IPAddress, session: BfdSession) -> bool:
        """Log state changes; True if there were any."""
        changed = bool(session.changes)
        for old, new in session.changes:
            log.info("BFD with %s: %s -> %s", address, STATE_NAMES[old], STATE_NAMES[new])
        session.changes.clear()
        return changed

    def _send(self, address: IPAddress, *, final: bool = False) -> None:
        with contextlib.suppress(OSError):  # the link is down: the peer's timer will notice, so will ours
            self._sockets[address].send(self.sessions[address].packet(final=final).encode())

    async def _send_forever(self, address: IPAddress) -> None:
        """Periodic packets, and one at once on every state change: coming Up we advertise the fast interval, so
        the peer expects it at once — still sleeping out the slow one would get us declared dead."""
        session, wake = self.sessions[address], self._wakes[address]
        while True:
            session.check_expiry(time.monotonic())
            self._report(address, session)
            self._send(address)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), session.tx_interval())


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.split("%", maxsplit=1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _sender(peer: IPAddress) -> socket.socket:
    family = socket.AF_INET if peer.version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if peer.version == 4:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
    for _ in range(64):
        try:
            sock.bind(("0.0.0.0" if peer.version == 4 else "::", random.randint(*SOURCE_PORTS)))
            break
        except OSError:
            continue
    sock.connect((str(peer), PORT))
    sock.setblocking(False)
    return sock
