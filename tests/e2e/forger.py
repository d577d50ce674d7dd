"""An attacker on the lab's LAN, for the heartbeat e2e test: run inside a lab host's namespace.

  python -m tests.e2e.forger sniff SRC DST SECONDS          hex payloads of heartbeats SRC -> DST (JSON)
  python -m tests.e2e.forger send SRC DST SECONDS PAYLOADS  the payloads (JSON hex list), spoofed from SRC, in a loop
  python -m tests.e2e.forger flood DST SECONDS              random datagrams from this host's own address

Spoofed datagrams go out through a raw socket with TTL 255, as a host on the segment can send them.
Every loop is bounded by its duration; nothing leaves the lab's addresses.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

from portico.ports import HEARTBEAT_PORT

ETH_P_IP = 0x0800


def sniff(src: str, dst: str, seconds: float) -> list[str]:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.settimeout(0.2)
    found: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(65535)
        except TimeoutError:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0xF) * 4
        if ip[9] != socket.IPPROTO_UDP or socket.inet_ntoa(ip[12:16]) != src or socket.inet_ntoa(ip[16:20]) != dst:
            continue
        udp = ip[ihl:]
        if struct.unpack("!H", udp[2:4])[0] == HEARTBEAT_PORT:
            found.append(udp[8:].hex())
    return found


def spoofed(src: str, dst: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", HEARTBEAT_PORT, HEARTBEAT_PORT, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 255, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))  # the kernel fills in the checksum
    return header + udp


def send(src: str, dst: str, seconds: float, payloads: list[bytes], rate: float = 2000) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    packets = [spoofed(src, dst, p) for p in payloads]
    sent, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        if sent > elapsed * rate:
            time.sleep(0.001)
            continue
        sock.sendto(packets[sent % len(packets)], (dst, 0))
        sent += 1
    return sent


def flood(dst: str, seconds: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            try:
                sock.sendto(os.urandom(200), (dst, HEARTBEAT_PORT))
                sent += 1
            except OSError:  # ICMP unreachable reported back, or a full buffer
                pass
    return sent


def main(argv: list[str]) -> None:
    match argv:
        case ["sniff", src, dst, seconds]:
            print(json.dumps(sniff(src, dst, float(seconds))))
        case ["send", src, dst, seconds, payloads]:
            print(send(src, dst, float(seconds), [bytes.fromhex(p) for p in json.loads(payloads)]))
        case ["flood", dst, seconds]:
            print(flood(dst, float(seconds)))
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
