"""Agents heartbeat each other over UDP on the node network, so each knows within a fraction of a
second which peers are alive and which VIPs each may announce.

Every beat carries the sender's whole eligible set (packed addresses), so all agents rank the same
candidates, and the VIPs it advertises over BGP (so any agent can say on a Service who advertises it).
A peer that stays silent for `dead_after` is dead. Beats are accepted only from the address the
sender's Node object gives it. The transport is asyncio's; the wire format is pure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from portico.ipam.blocks import IPAddress

log = logging.getLogger(__name__)

HEARTBEAT_PORT = 9471
INTERVAL = 0.1  # seconds between beats
DEAD_AFTER = 0.3  # silence that makes a peer dead: three beats
MAX_BEAT_BYTES = 65_000  # one UDP datagram: about 16,000 IPv4 or 4,000 IPv6 eligible addresses


class Beat(msgspec.Struct, array_like=True, frozen=True):
    node: str
    boot: int  # random per agent start: a restarted peer is a new peer
    seq: int
    ipv4: bytes = b""  # eligible addresses, 4 bytes each
    ipv6: bytes = b""  # 16 bytes each
    bgp_ipv4: bytes = b""  # advertised over BGP by the sender
    bgp_ipv6: bytes = b""


def _pack(addresses: Iterable[IPAddress], version: int) -> bytes:
    return b"".join(a.packed for a in sorted(a for a in addresses if a.version == version))


def _unpack(v4: bytes, v6: bytes) -> frozenset[IPAddress]:
    if len(v4) % 4 or len(v6) % 16:
        raise ValueError("truncated address list")
    return frozenset([*(ipaddress.IPv4Address(v4[i:i + 4]) for i in range(0, len(v4), 4)),
                      *(ipaddress.IPv6Address(v6[i:i + 16]) for i in range(0, len(v6), 16))])


def encode_beat(node: str, boot: int, seq: int, eligible: Iterable[IPAddress],
                advertised: Iterable[IPAddress] = ()) -> bytes:
    return msgspec.msgpack.encode(Beat(node, boot, seq, _pack(eligible, 4), _pack(eligible, 6),
                                       _pack(advertised, 4), _pack(advertised, 6)))


def decode_beat(data: bytes) -> tuple[Beat, frozenset[IPAddress], frozenset[IPAddress]]:
    """(beat, eligible, advertised over BGP). Raises msgspec.DecodeError or ValueError on anything that is not
    a beat."""
    beat = msgspec.msgpack.decode(data, type=Beat)
    return beat, _unpack(beat.ipv4, beat.ipv6), _unpack(beat.bgp_ipv4, beat.bgp_ipv6)


@dataclass
class Peer:
    address: IPAddress
    boot: int = 0
    seq: int = -1
    eligible: frozenset[IPAddress] = frozenset()
    advertised: frozenset[IPAddress] = frozenset()  # over BGP
    heard: float | None = None  # monotonic time of the last beat; None: not alive
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.heard is not None


# on_change(peer name, what happened): called when a peer comes, goes, or changes its eligible set
ChangeCallback = Callable[[str, str], None]


class HeartbeatMesh(asyncio.DatagramProtocol):
    def __init__(self, node: str, on_change: ChangeCallback, *, port: int = HEARTBEAT_PORT,
                 interval: float = INTERVAL, dead_after: float = DEAD_AFTER) -> None:
        self.node, self.port, self.interval, self.dead_after = node, port, interval, dead_after
        self.on_change = on_change
        self.peers: dict[str, Peer] = {}
        self.eligible: frozenset[IPAddress] = frozenset()
        self.advertised: frozenset[IPAddress] = frozenset()
        self.started: float | None = None
        self.rejected = 0  # datagrams that were not a beat from a known node's address
        self._boot = secrets.randbits(63)
        self._seq = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._wake = asyncio.Event()

    # -- what the announcer reads --------------------------------------------------------------------
    @property
    def settled(self) -> bool:
        """True once every live peer has had the time to be heard: only then may this node claim VIPs."""
        return self.started is not None and time.monotonic() - self.started >= self.dead_after

    def alive(self) -> dict[str, Peer]:
        return {name: p for name, p in self.peers.items() if p.alive}

    # -- what the agent sets ---------------------------------------------------------------------------
    def set_peers(self, addresses: dict[str, IPAddress]) -> None:
        """The other nodes and their InternalIPs (from Node objects)."""
        for name in set(self.peers) - set(addresses):
            peer = self.peers.pop(name)
            if peer.expiry:
                peer.expiry.cancel()
            if peer.alive:
                self.on_change(name, "removed from the cluster")
        for name, address in addresses.items():
            if name == self.node:
                continue
            if name in self.peers:
                self.peers[name].address = address
            else:
                self.peers[name] = Peer(address)

    def set_eligible(self, eligible: frozenset[IPAddress]) -> None:
        """This node's eligible VIPs; a change is sent at once, not at the next beat."""
        if eligible != self.eligible:
            self.eligible = eligible
            self._wake.set()

    def set_advertised(self, advertised: frozenset[IPAddress]) -> None:
        """The VIPs this node advertises over BGP; a change is sent at once."""
        if advertised != self.advertised:
            self.advertised = advertised
            self._wake.set()

    # -- running ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 peers arrive v4-mapped
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::", self.port))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self._transport = transport
        self.started = time.monotonic()
        try:
            while True:
                self._send()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
        finally:  # a last beat with nothing eligible: on a graceful stop peers take over at once
            self.eligible = self.advertised = frozenset()
            self._send()
            transport.close()
            for peer in self.peers.values():
                if peer.expiry:
                    peer.expiry.cancel()

    def _send(self) -> None:
        assert self._transport is not None
        self._seq += 1
        data = encode_beat(self.node, self._boot, self._seq, self.eligible, self.advertised)
        if len(data) > MAX_BEAT_BYTES:
            log.error("%d eligible and %d advertised addresses do not fit one heartbeat; announcing none in layer 2"
                      " and reporting none", len(self.eligible), len(self.advertised))
            data = encode_beat(self.node, self._boot, self._seq, ())
        for peer in self.peers.values():
            try:
                self._transport.sendto(data, (_mapped(peer.address), self.port))
            except OSError as e:  # e.g. our interface is down: peers will notice the silence
                log.debug("heartbeat to %s: %s", peer.address, e)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            beat, eligible, advertised = decode_beat(data)
        except (msgspec.DecodeError, ValueError):
            self.rejected += 1
            return
        peer = self.peers.get(beat.node)
        if peer is None or _unmapped(addr[0]) != peer.address:
            self.rejected += 1  # an unknown node, or someone speaking for it from elsewhere
            return
        if beat.boot == peer.boot and beat.seq <= peer.seq:
            return  # reordered
        came = not peer.alive
        restarted = peer.alive and beat.boot != peer.boot
        changed = eligible != peer.eligible or advertised != peer.advertised
        peer.boot, peer.seq, peer.eligible, peer.heard = beat.boot, beat.seq, eligible, time.monotonic()
        peer.advertised = advertised
        if peer.expiry:
            peer.expiry.cancel()
        peer.expiry = asyncio.get_running_loop().call_later(self.dead_after, self._expire, beat.node)
        if came or restarted or changed:
            self.on_change(beat.node, "came up" if came else "restarted" if restarted else "changed its VIPs")

    def _expire(self, name: str) -> None:
        peer = self.peers.get(name)
        if peer is None or peer.heard is None:
            return
        silent = time.monotonic() - peer.heard
        peer.heard, peer.eligible, peer.advertised, peer.expiry = None, frozenset(), frozenset(), None
        self.on_change(name, f"silent for {silent * 1000:.0f} ms")


def _mapped(address: IPAddress) -> str:
    return f"::ffff:{address}" if address.version == 4 else str(address)


def _unmapped(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
