"""Answering ARP and neighbour solicitations for owned VIPs on one interface (raw packet sockets).

Fail-safe by construction: the answers come from this process, so a dead agent answers nothing and
neighbours move to whichever node answers next. The kernel itself never answers for a VIP (the VIP
is on no interface; nftables DNATs it before routing).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from portico.announce import frames
from portico.announce.links import interface_mac
from portico.ipam.blocks import IPAddress

log = logging.getLogger(__name__)

SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_ALLMULTI = 263, 1, 2
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4  # our own frames, looped back to packet sockets


def _attach_filter(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class L2Responder:
    """Answers for `owned` on `interface` while running; `announce()` sends gratuitous ARP / unsolicited NA.
    A frame it cannot send is reported to `on_failure(interface, why)`: its owner stops announcing here."""

    def __init__(self, interface: str, on_failure: Callable[[str, str], None]) -> None:
        self.interface = interface
        self.on_failure = on_failure
        self.owned: frozenset[IPAddress] = frozenset()
        self.index = 0  # the interface's index when opened: a recreated interface has a new one
        self._sockets: list[socket.socket] = []
        self._mac = b""

    def open(self) -> None:
        """Raises OSError when the interface does not exist (or we lack CAP_NET_RAW)."""
        self._mac = interface_mac(self.interface)
        self.index = index = socket.if_nametoindex(self.interface)
        arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(frames.ETH_P_ARP))
        nd = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(frames.ETH_P_IPV6))
        _attach_filter(nd, frames.solicitation_filter())
        # Solicitations go to solicited-node multicast MACs nobody joined for a VIP: take all multicast.
        nd.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack("iHH8s", index, PACKET_MR_ALLMULTI, 0, b""))
        loop = asyncio.get_running_loop()
        for sock, proto in ((arp, frames.ETH_P_ARP), (nd, frames.ETH_P_IPV6)):
            sock.bind((self.interface, proto))
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._readable, sock)
            self._sockets.append(sock)

    def current(self) -> bool:
        """Still bound to the interface of that name (a VLAN torn down and made again is a new interface, and
        sockets bound to the old one hear and send nothing)."""
        try:
            return socket.if_nametoindex(self.interface) == self.index
        except OSError:
            return False

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()

    def announce(self, vips: set[IPAddress]) -> None:
        """Tell the segment these VIPs are here now (on a takeover)."""
        for vip in vips:
            if isinstance(vip, ipaddress.IPv4Address):
                self._send(frames.gratuitous_arp(self._mac, vip))
            else:
                self._send(frames.unsolicited_advertisement(self._mac, vip))

    def _send(self, frame: bytes) -> None:
        if not self._sockets:
            return
        try:
            self._sockets[0].send(frame)
        except OSError as e:  # down, gone, or refused: answers we cannot give must come from another node
            self.on_failure(self.interface, f"cannot send on {self.interface}: {e}")

    def _readable(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                try:
                    frame, address = sock.recvfrom(2048)
                except OSError as e:  # ENETDOWN: the interface went down; the link watch withdraws
                    log.debug("%s: receive failed: %s", self.interface, e)
                    return
                if address[2] == PACKET_OUTGOING:
                    continue
                self._answer(frame)

    def _answer(self, frame: bytes) -> None:
        request = frames.parse_arp_request(frame) or frames.parse_neighbor_solicitation(frame)
        if request is None or request.target not in self.owned:
            return
        if isinstance(request.target, ipaddress.IPv4Address):
            self._send(frames.arp_reply(self._mac, request))
        else:
            self._send(frames.neighbor_advertisement(self._mac, request))
