"""Whether the node's interfaces are up, as the kernel says, the moment it changes (rtnetlink)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import socket
import struct
import subprocess
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

RTMGRP_LINK = 1
SIOCGIFFLAGS, SIOCGIFHWADDR = 0x8913, 0x8927
IFF_UP, IFF_RUNNING = 0x1, 0x40


def _ifreq(name: str, request: int) -> bytes:
    """An interface ioctl in this process's network namespace (sysfs may belong to another one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return fcntl.ioctl(sock.fileno(), request, struct.pack("16s24x", name.encode()[:15]))


def interface_state(name: str) -> str:
    """`up`, `down` (administratively), `no-carrier`, or `missing`."""
    try:
        flags = struct.unpack_from("H", _ifreq(name, SIOCGIFFLAGS), 16)[0]
    except OSError:
        return "missing"
    if not flags & IFF_UP:
        return "down"
    return "up" if flags & IFF_RUNNING else "no-carrier"


def interface_mac(name: str) -> bytes:
    return _ifreq(name, SIOCGIFHWADDR)[18:24]


class LinkWatch:
    """Calls `on_change()` on every link event in this network namespace; the caller re-reads the states
    it cares about (`interface_state`). A slow poll backs up the event socket."""

    def __init__(self, on_change: Callable[[], None], poll_seconds: float = 1.0) -> None:
        self.on_change, self.poll_seconds = on_change, poll_seconds

    async def run(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.bind((0, RTMGRP_LINK))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._readable, sock)
        try:
            while True:
                await asyncio.sleep(self.poll_seconds)
                self.on_change()
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()

    def _readable(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while sock.recv(65536):
                pass
        self.on_change()


def _links() -> list[dict[str, Any]]:
    """`ip -j addr show` in this network namespace: every link with its addresses."""
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=False).stdout
    links: list[dict[str, Any]] = json.loads(out or "[]")
    return links


def connected_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of this namespace's addresses: a peer inside one shares a segment with us."""
    return [ipaddress.ip_network((a["local"], a["prefixlen"]), strict=False)
            for link in _links() for a in link.get("addr_info", [])
            if a.get("scope") != "host" and "local" in a and "prefixlen" in a]


def interface_with_address(address: str) -> str | None:
    """The interface holding `address` in this network namespace (where the node's InternalIP lives)."""
    for link in _links():
        if any(a.get("local") == address for a in link.get("addr_info", [])):
            return str(link["ifname"])
    return None
