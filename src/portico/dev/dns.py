"""The lab's stand-in for `registry.k8s.io/coredns/coredns`, which the Gateway API conformance manifests run with a
Corefile of `foo.bar.com:53 { whoami }` and `.:53 { forward . 8.8.8.8 9.9.9.9 }`.

It answers as CoreDNS's whoami plugin does for names in foo.bar.com — the asker's address (A or AAAA, by its family)
and its port (SRV `_udp.NAME` / `_tcp.NAME`), in the additional section — over UDP and TCP on port 53. Every other
name gets REFUSED: the lab forwards nothing outside itself, where CoreDNS would have asked public resolvers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import struct
from typing import cast

WHOAMI_ZONE = "foo.bar.com"
PORT = 53
_A, _AAAA, _SRV, _IN = 1, 28, 33, 1
_REFUSED, _FORMERR = 5, 1


def _name(labels: bytes, offset: int) -> tuple[str, int]:
    """A question's name (no compression in questions from real resolvers' clients); the offset after it."""
    parts = []
    while (length := labels[offset]) != 0:
        if length >= 0xC0:
            raise ValueError("compressed name in a question")
        parts.append(labels[offset + 1:offset + 1 + length].decode("ascii"))
        offset += 1 + length
    return ".".join(parts), offset + 1


def _encode(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.split(".") if p) + b"\0"


def _record(name: str, rtype: int, data: bytes) -> bytes:
    return _encode(name) + struct.pack("!HHIH", rtype, _IN, 0, len(data)) + data


def answer(query: bytes, client: str, port: int, transport: str) -> bytes:
    """The response to one DNS message from `client`:`port` (pure)."""
    if len(query) < 12:
        raise ValueError("short DNS message")
    ident, flags, qdcount = struct.unpack("!HHH", query[:6])
    opcode_rd = flags & 0x7900  # opcode and RD, echoed
    try:
        if qdcount != 1:
            raise ValueError("one question expected")
        qname, end = _name(query, 12)
        question = query[12:end + 4]
    except (ValueError, IndexError, UnicodeDecodeError):
        return struct.pack("!HHHHHH", ident, 0x8000 | opcode_rd | _FORMERR, 0, 0, 0, 0)
    name = qname.lower().rstrip(".")
    if name != WHOAMI_ZONE and not name.endswith("." + WHOAMI_ZONE):
        return struct.pack("!HHHHHH", ident, 0x8000 | opcode_rd | _REFUSED, 1, 0, 0, 0) + question
    address = ipaddress.ip_address(client.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    extra = [_record(qname, _A if address.version == 4 else _AAAA, address.packed),
             _record(f"_{transport}.{qname}", _SRV, struct.pack("!HHH", 0, 0, port) + _encode(qname))]
    header = struct.pack("!HHHHHH", ident, 0x8400 | opcode_rd, 1, 0, 0, len(extra))  # authoritative
    return header + question + b"".join(extra)


class _UDP(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(ValueError):  # not DNS: no answer
            self.transport.sendto(answer(data, addr[0], addr[1], "udp"), addr)
        print(f"udp {addr[0]}:{addr[1]}", flush=True)


async def _tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername")
    try:
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = answer(await reader.readexactly(length), peer[0], peer[1], "tcp")
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_UDP, local_addr=("::", port))
    server = await asyncio.start_server(_tcp, "::", port)
    print(f"whoami for {WHOAMI_ZONE} on :{port} (udp, tcp); everything else REFUSED", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="dns", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=PORT)
    args, _ = parser.parse_known_args()  # CoreDNS's own flags (-conf FILE) mean nothing here
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
