"""The `portico.dev/echo` image: answers every request with who served it and whom it saw.

TCP ports speak just enough HTTP/1.1 (keep-alive, pipelining) for curl and wrk: every request
gets `200` and the JSON body `{"pod", "node", "client"}`. UDP ports answer each datagram with
the same JSON. `client` is the source address as this pod saw it (shows SNAT vs. preserved IPs).
TLS ports (`PORT/TLS`) speak the same HTTP over TLS, with a self-signed certificate made at start.
`GET /bytes/N` answers N bytes instead (transfers, for bandwidth limits).

It can be made sick without failing a Kubernetes readiness probe (which the lab kubelet runs only if the
pod asks for one), so tests prove Portico's monitors rather than the kubelet's:
  SIGUSR1  sick: HTTP answers 503 (with the same body), UDP datagrams go unanswered, ICMP echo is ignored
           (the pod's sysctls);
  SIGUSR2  refusing: every port closed (TCP resets, ICMP port unreachable for UDP);
  SIGHUP   well again.

`--drain SECONDS` honours the termination contract as a well-behaved server does: on SIGTERM it keeps serving
for that long, answering with `Connection: close` (so keep-alive clients move to another backend), then exits.
Without it, SIGTERM ends the process at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import signal
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import cast

import uvloop


def _body(pod: str, node: str, client: str) -> bytes:
    address = ipaddress.ip_address(client.split("%", 1)[0]) if client else None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        client = str(address.ipv4_mapped)  # dual-stack socket: show IPv4 clients as IPv4
    return json.dumps({"pod": pod, "node": node, "client": client}).encode() + b"\n"


ICMP_SYSCTLS = ("/proc/sys/net/ipv4/icmp_echo_ignore_all", "/proc/sys/net/ipv6/icmp/echo_ignore_all")


class Health:
    """What the echo is told to be (by signal): well, sick or refusing."""

    def __init__(self) -> None:
        self.sick = False
        self.draining = False  # after SIGTERM, with --drain: answer, then close each connection


class EchoHTTP(asyncio.Protocol):
    def __init__(self, pod: str, node: str, health: Health) -> None:
        self.pod, self.node, self.health = pod, node, health
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        body = _body(self.pod, self.node, peer[0] if peer else "")
        self.well, self.sick = (status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n" + body
                                for status in (b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Service Unavailable"))

    @property
    def response(self) -> bytes:
        return self.sick if self.health.sick else self.well  # the sick one still says who answered

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
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"/"
            responses.append(_bulk(path) or self.response)
            if self.health.draining:
                responses[-1] = responses[-1].replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
            if self.health.draining or b"\r\nconnection: close" in head.lower():
                self.transport.write(b"".join(responses))
                self.transport.close()
                return
        if responses:
            self.transport.write(b"".join(responses))
        if len(self.buffer) > 65536:
            self.transport.close()


class EchoUDP(asyncio.DatagramProtocol):
    def __init__(self, pod: str, node: str, health: Health) -> None:
        self.pod, self.node, self.health = pod, node, health

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.health.sick:
            self.transport.sendto(_body(self.pod, self.node, addr[0]), addr)


MAX_BULK = 1 << 30


def _bulk(path: bytes) -> bytes | None:
    """`GET /bytes/N`: N bytes of body, for transfers (bandwidth limits)."""
    if not path.startswith(b"/bytes/") or not path[7:].isdigit() or int(path[7:]) > MAX_BULK:
        return None
    n = int(path[7:])
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
            + str(n).encode() + b"\r\n\r\n" + b"x" * n)


def self_signed(pod: str) -> ssl.SSLContext:
    """A server context with a certificate made now (the lab's HTTPS backends; nobody verifies it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, pod)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context.load_cert_chain(cert_file, key_file)
    return context


def _dual_stack_socket(kind: socket.SocketKind, port: int) -> socket.socket:
    """One socket for IPv4 and IPv6 (asyncio's own would set IPV6_V6ONLY)."""
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    return sock


class Echo:
    def __init__(self, pod: str, node: str, listens: list[str]) -> None:
        self.pod, self.node, self.listens = pod, node, listens
        self.health = Health()
        self.open: list[asyncio.BaseTransport | asyncio.Server] = []
        self._tls: ssl.SSLContext | None = None

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        for spec in self.listens:
            port_s, _, proto = spec.partition("/")
            if proto.upper() == "UDP":
                sock = _dual_stack_socket(socket.SOCK_DGRAM, int(port_s))
                transport, _ = await loop.create_datagram_endpoint(lambda: EchoUDP(self.pod, self.node, self.health),
                                                                   sock=sock)
                self.open.append(transport)
            else:
                tls = None
                if proto.upper() == "TLS":
                    tls = self._tls = self._tls or self_signed(self.pod)
                sock = _dual_stack_socket(socket.SOCK_STREAM, int(port_s))
                self.open.append(await loop.create_server(lambda: EchoHTTP(self.pod, self.node, self.health),
                                                          sock=sock, backlog=4096, ssl=tls))

    def close(self) -> None:
        for held in self.open:
            held.close()
        self.open = []

    async def be(self, state: str) -> None:
        began = time.time()  # logged: tests time a sick backend's removal from this moment, not from the signal's
        self.health.sick = state == "sick"
        _ignore_pings(state == "sick")
        if state == "refusing":
            self.close()
        elif not self.open:
            await self.listen()
        print(f"echo {self.pod}: {state} since {began:.3f}", flush=True)


def _ignore_pings(ignore: bool) -> None:
    """The pod's own network namespace's sysctls (the lab runs it as root): a sick pod's kernel goes quiet."""
    for path in ICMP_SYSCTLS:
        with contextlib.suppress(OSError):
            Path(path).write_text("1" if ignore else "0")


async def serve(pod: str, node: str, listens: list[str], drain: float = 0.0) -> None:
    echo = Echo(pod, node, listens)
    await echo.listen()
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    def become(state: str) -> None:
        task = asyncio.ensure_future(echo.be(state))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for signum, state in ((signal.SIGUSR1, "sick"), (signal.SIGUSR2, "refusing"), (signal.SIGHUP, "well")):
        loop.add_signal_handler(signum, become, state)
    stopping = asyncio.Event()
    if drain > 0:
        loop.add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    echo.health.draining = True
    print(f"echo {pod}: draining for {drain:g} s", flush=True)
    await asyncio.sleep(drain)


def main() -> None:
    parser = argparse.ArgumentParser(prog="echo")
    parser.add_argument("--pod", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--listen", action="append", default=[], help="PORT/PROTO, repeatable")
    parser.add_argument("--drain", type=float, default=0.0, metavar="SECONDS",
                        help="on SIGTERM, keep serving this long (with Connection: close), then exit")
    args = parser.parse_args()
    uvloop.run(serve(args.pod, args.node, args.listen or ["8080/TCP"], args.drain))


if __name__ == "__main__":
    main()
