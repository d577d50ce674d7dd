"""The `portico.dev/echo` image: answers every request with who served it and whom it saw.

TCP ports speak just enough HTTP/1.1 (keep-alive, pipelining) for curl and wrk: every request
gets `200` and the JSON body `{"pod", "node", "client"}`. UDP ports answer each datagram with
the same JSON. `client` is the source address as this pod saw it (shows SNAT vs. preserved IPs).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
from typing import cast

import uvloop


def _body(pod: str, node: str, client: str) -> bytes:
    address = ipaddress.ip_address(client.split("%", 1)[0]) if client else None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        client = str(address.ipv4_mapped)  # dual-stack socket: show IPv4 clients as IPv4
    return json.dumps({"pod": pod, "node": node, "client": client}).encode() + b"\n"


class EchoHTTP(asyncio.Protocol):
    def __init__(self, pod: str, node: str) -> None:
        self.pod, self.node = pod, node
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        body = _body(self.pod, self.node, peer[0] if peer else "")
        self.response = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        responses = []
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head, rest = self.buffer[:head_end], self.buffer[head_end + 4:]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if len(rest) < length:
                break
            self.buffer = rest[length:]
            responses.append(self.response)
            if b"\r\nconnection: close" in head.lower():
                self.transport.write(b"".join(responses))
                self.transport.close()
                return
        if responses:
            self.transport.write(b"".join(responses))
        if len(self.buffer) > 65536:
            self.transport.close()


class EchoUDP(asyncio.DatagramProtocol):
    def __init__(self, pod: str, node: str) -> None:
        self.pod, self.node = pod, node

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(_body(self.pod, self.node, addr[0]), addr)


def _dual_stack_socket(kind: socket.SocketKind, port: int) -> socket.socket:
    """One socket for IPv4 and IPv6 (asyncio's own would set IPV6_V6ONLY)."""
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    return sock


async def serve(pod: str, node: str, listens: list[str]) -> None:
    loop = asyncio.get_running_loop()
    for spec in listens:
        port_s, _, proto = spec.partition("/")
        if proto.upper() == "UDP":
            sock = _dual_stack_socket(socket.SOCK_DGRAM, int(port_s))
            await loop.create_datagram_endpoint(lambda: EchoUDP(pod, node), sock=sock)
        else:
            sock = _dual_stack_socket(socket.SOCK_STREAM, int(port_s))
            await loop.create_server(lambda: EchoHTTP(pod, node), sock=sock, backlog=4096)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="echo")
    parser.add_argument("--pod", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--listen", action="append", default=[], help="PORT/PROTO, repeatable")
    args = parser.parse_args()
    uvloop.run(serve(args.pod, args.node, args.listen or ["8080/TCP"]))


if __name__ == "__main__":
    main()
