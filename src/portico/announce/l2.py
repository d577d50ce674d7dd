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
    """Answers for `owned` on `interface` while running; `announce()` sends gratuitous ARP / unsolicited NA."""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.owned: frozenset[IPAddress] = frozenset()
        self._sockets: list[socket.socket] = []
        self._mac = b""

    def open(self) -> None:
        """Raises OSError when the interface does not exist (or we lack CAP_NET_RAW)."""
        self._mac = interface_mac(self.interface)
        index = socket.if_nametoindex(self.interface)
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
        except OSError as e:  # the interface went down: eligibility follows from the link watch
            log.debug("%s: send failed: %s", self.interface, e)

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
