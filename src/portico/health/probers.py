"""The probes themselves: sockets at the edge, each reporting `done(ok, why)` once per probe.

Built to probe thousands of endpoints a second from one agent without a Python object per packet more than
needed (bench/health.py measures them):
  * TCP is a half-open check (SYN -> SYN-ACK), as ADCs offer it: one raw socket per family sends a SYN
    built once per target, and the reply is matched by (address, port, our port) and by its acknowledgement
    of our secret sequence number. The node's kernel answers the SYN-ACK with a reset (no socket holds the
    port), so the backend keeps no connection. A reset or silence is down. Our ports come from a range
    above Linux's ephemeral ports, and a socket filter lets only replies to it reach us.
  * ICMP: one raw socket per family, echo requests matched by identifier and sequence.
  * UDP: one socket per family; a reply (containing `expect`, if set) is up; an ICMP error (read from the
    socket's error queue, IP_RECVERR) or silence is down.
  * HTTP and HTTPS: a connection per check, through asyncio (TLS unverified: a pod's certificate is rarely
    one a node could check; the check is of health, not identity).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import errno
import functools
import ipaddress
import os
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portico.health.checks import BODY_BYTES, Check, status_ok
from portico.ipam.blocks import IPAddress

Done = Callable[[bool, str], None]
PROBE_PORTS = (61000, 65535)  # our source ports for half-open checks: above Linux's ephemeral range
SO_ATTACH_FILTER = 26
IP_RECVERR, IPV6_RECVERR, IPV6_CHECKSUM = 11, 25, 7
SWEEP_SECONDS = 0.005  # while probes are out: how often TCP answers are read, probes resent or given up
READ_BATCH = 1024
SYN, RST, ACK = 0x02, 0x04, 0x10
_TCP_HEAD = struct.Struct("!HHIIBB")  # ports, sequence, acknowledgement, offset, flags
# An ICMP error for an earlier datagram, which the kernel reports on the socket's next call, whatever it is.
LATE_ERRORS = {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(array.array("H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _packed(host: str) -> bytes:
    """An address as a socket reports it (an IPv6 one perhaps with %scope), in network byte order."""
    host = host.split("%", maxsplit=1)[0]
    return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)


def _source_for(ip: IPAddress) -> IPAddress:
    """The address this node sends from to reach `ip` (the route's preferred source)."""
    with socket.socket(socket.AF_INET if ip.version == 4 else socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.connect((str(ip), 9))
        return ipaddress.ip_address(s.getsockname()[0])


def syn_segment(source: IPAddress, ip: IPAddress, sport: int, dport: int, seq: int) -> bytes:
    """A TCP SYN. IPv4 carries our checksum (over the pseudo-header); IPv6's kernel fills it in (IPV6_CHECKSUM)."""
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, SYN, 64240, 0, 0)
    if ip.version == 6:
        return header
    pseudo = source.packed + ip.packed + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header))
    return header[:16] + struct.pack("=H", _checksum(pseudo + header)) + header[18:]


def _port_filter(ipv4: bool) -> bytes:
    """A classic BPF program: keep TCP segments whose destination port is one of ours (the IPv4 raw socket
    sees the IP header first; the IPv6 one starts at the TCP header)."""
    ld_port = [(0xB1, 0, 0, 0), (0x48, 0, 0, 2)] if ipv4 else [(0x28, 0, 0, 2)]  # ldxb 4*([0]&0xf); ldh [x+2]
    program = [*ld_port, (0x35, 0, 1, PROBE_PORTS[0]), (0x06, 0, 0, 256), (0x06, 0, 0, 0)]  # jge; ret 256; ret 0
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def _attach(sock: socket.socket, program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


@dataclass(slots=True)
class _Pending:
    done: Done
    deadline: float
    started: float
    resend: tuple[socket.socket, bytes, tuple[str, int]] | None = None  # sent again, once, halfway to the deadline


class Probers:
    """Starts probes and calls each one's `done` exactly once (success, failure or timeout)."""

    def __init__(self, *, sweeps_itself: bool = True) -> None:
        """`sweeps_itself`: schedule `sweep` while probes are out; False when the owner calls it on a tick of its
        own (the checker: one wake-up serves both, and on some machines a timer wake-up costs 150 µs)."""
        self._sweeps_itself = sweeps_itself
        self._raw_tcp: dict[int, socket.socket] = {}
        self._raw_icmp: dict[int, socket.socket] = {}
        self._udp: dict[int, socket.socket] = {}
        # Probes in flight, by what their answer will carry. Two Services may check one endpoint at once: a key
        # holds every probe waiting on it.
        self._syn: dict[tuple[bytes, int, int], list[tuple[int, _Pending]]] = {}  # (ip, port, our port) -> seq
        # target -> (SYN, our port, seq, where to send it)
        self._segments: dict[tuple[IPAddress, int], tuple[bytes, int, int, tuple[str, int]]] = {}
        self._echo: dict[tuple[bytes, int], list[tuple[None, _Pending]]] = {}  # (ip, sequence)
        self._datagrams: dict[tuple[bytes, int], list[tuple[bytes, _Pending]]] = {}  # (ip, port) -> expect
        self._tasks: set[asyncio.Task[None]] = set()
        self._icmp_id = os.getpid() & 0xFFFF
        self._icmp_seq = 0
        self._next_port = PROBE_PORTS[0]
        self._ssl = ssl.create_default_context()
        self._ssl.check_hostname = False
        self._ssl.verify_mode = ssl.CERT_NONE
        self._sweeper: asyncio.TimerHandle | None = None
        self.latency: Callable[[str, float], None] = lambda kind, seconds: None  # observed per completed probe

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sockets in (self._raw_tcp, self._raw_icmp, self._udp):
            for sock in sockets.values():
                if sockets is not self._raw_tcp:
                    loop.remove_reader(sock.fileno())
                sock.close()
            sockets.clear()
        for task in self._tasks:
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()

    def prepare(self, check: Check, ip: IPAddress, port: int) -> Callable[[Done], None]:
        """This target's probe, ready to fire as often as its check says. What can be worked out once is: for
        TCP, the SYN itself, where it goes and how its answer is recognised (the hot path at 10,000 targets)."""
        if check.type != "TCP":
            return functools.partial(self.start, check, ip, port)
        packet, sport, seq, destination = self._segment(ip, port)
        key, version, timeout = (ip.packed, port, sport), ip.version, check.timeout
        pending, sockets, monotonic = self._syn, self._raw_tcp, time.monotonic

        def fire(done: Done) -> None:
            now = monotonic()
            probe = _Pending(done, now + timeout, now)
            waiting = pending.get(key)
            if waiting is not None:
                waiting.append((seq, probe))  # a SYN is already out: its answer will do for both
                return
            pending[key] = [(seq, probe)]
            if self._sweeper is None and self._sweeps_itself:
                self._sweep_soon()
            sock = sockets.get(version) or self._socket(sockets, version, self._open_raw_tcp)
            try:
                self._send(probe, sock, packet, destination)
            except OSError as e:
                del pending[key]
                done(False, f"cannot send: {e.strerror or e}")
        return fire

    def start(self, check: Check, ip: IPAddress, port: int, done: Done) -> None:
        """One probe now (a checker prepares each target's once and fires it every interval)."""
        if check.type == "TCP":
            self.prepare(check, ip, port)(done)  # the SYN is made once per target all the same
            return
        now = time.monotonic()
        probe = _Pending(done, now + check.timeout, now)
        self._sweep_soon()
        try:
            match check.type:
                case "ICMP":
                    self._start_echo(ip, probe)
                case "UDP":
                    self._start_datagram(check, ip, port, probe)
                case _:
                    task = asyncio.ensure_future(self._http(check, ip, port, probe))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except OSError as e:
            done(False, f"cannot send: {e.strerror or e}")

    # -- TCP, half-open ----------------------------------------------------------------------------------
    def _segment(self, ip: IPAddress, port: int) -> tuple[bytes, int, int, tuple[str, int]]:
        """The SYN for a target (made once: our port for it and our secret sequence number stay)."""
        segment = self._segments.get((ip, port))
        if segment is None:
            sport = self._next_port
            self._next_port = sport + 1 if sport < PROBE_PORTS[1] else PROBE_PORTS[0]
            seq = random.getrandbits(32)
            segment = syn_segment(_source_for(ip), ip, sport, port, seq), sport, seq, (str(ip), 0)
            self._segments[ip, port] = segment
        return segment

    def _open_raw_tcp(self, version: int) -> socket.socket:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_TCP)
        if version == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 16)
        _attach(sock, _port_filter(version == 4))
        return sock  # read by the sweeper, in batches: thousands of answers a second need no wake-up each

    def _read_tcp(self, sock: socket.socket, version: int) -> None:
        pending, recvfrom, unpack = self._syn, sock.recvfrom, _TCP_HEAD.unpack_from
        for _ in range(READ_BATCH):
            try:
                data, addr = recvfrom(256)
            except (BlockingIOError, InterruptedError):
                return
            offset = (data[0] & 0x0F) * 4 if version == 4 else 0
            if len(data) < offset + 20:
                continue
            sport, dport, _, ack, _, flags = unpack(data, offset)
            key = (_packed(addr[0]), sport, dport)
            held = pending.get(key)
            if held is None or not flags & ACK or ack != (held[0][0] + 1) & 0xFFFFFFFF:
                continue  # not an answer to our SYN (or a forged one: it does not acknowledge our sequence)
            for _, probe in pending.pop(key):
                self._finish(probe, "TCP", flags & (SYN | RST) == SYN, "connection refused (reset)")

    # -- ICMP echo ---------------------------------------------------------------------------------------
    def _start_echo(self, ip: IPAddress, probe: _Pending) -> None:
        self._icmp_seq = (self._icmp_seq + 1) & 0xFFFF
        seq = self._icmp_seq
        kind = 8 if ip.version == 4 else 128  # echo request
        header = struct.pack("!BBHHH", kind, 0, 0, self._icmp_id, seq) + b"portico-health"
        if ip.version == 4:  # ICMPv6's checksum covers a pseudo-header: the kernel computes it
            header = header[:2] + struct.pack("=H", _checksum(header)) + header[4:]
        self._echo[ip.packed, seq] = [(None, probe)]
        self._send(probe, self._socket(self._raw_icmp, ip.version, self._open_raw_icmp), header, (str(ip), 0))

    def _open_raw_icmp(self, version: int) -> socket.socket:
        if version == 4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_ICMP)
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_ICMPV6)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read_icmp, sock, version)
        return sock

    def _read_icmp(self, sock: socket.socket, version: int) -> None:
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(256)
            except (BlockingIOError, InterruptedError):
                return
            offset = (data[0] & 0x0F) * 4 if version == 4 else 0
            if len(data) < offset + 8:
                continue
            kind, _, _, ident, seq = struct.unpack_from("!BBHHH", data, offset)
            if kind != (0 if version == 4 else 129) or ident != self._icmp_id:
                continue  # not an echo reply to us
            held = self._echo.pop((_packed(addr[0]), seq), None)
            for _, probe in held or ():
                self._finish(probe, "ICMP", True, "")

    # -- UDP ---------------------------------------------------------------------------------------------
    def _start_datagram(self, check: Check, ip: IPAddress, port: int, probe: _Pending) -> None:
        waiting = self._datagrams.setdefault((ip.packed, port), [])
        waiting.append((check.expect, probe))
        if len(waiting) > 1:
            return  # one datagram is out: its reply does for both
        self._send(probe, self._socket(self._udp, ip.version, self._open_udp), check.send, (str(ip), port))

    def _open_udp(self, version: int) -> socket.socket:
        if version == 4:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read_udp, sock)
        return sock

    def _read_udp(self, sock: socket.socket) -> None:
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65_535)
            except (BlockingIOError, InterruptedError):
                self._read_udp_errors(sock)
                return
            except OSError:  # an ICMP error is waiting in the error queue
                self._read_udp_errors(sock)
                continue
            key = (_packed(addr[0]), addr[1])
            for expect, probe in self._datagrams.pop(key, ()):
                self._finish(probe, "UDP", expect in data, f"the reply does not contain {expect[:40]!r}")

    def _read_udp_errors(self, sock: socket.socket) -> None:
        for _ in range(READ_BATCH):
            try:
                _, _, _, addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            key = (_packed(addr[0]), addr[1])  # the original destination
            for _, probe in self._datagrams.pop(key, ()):
                self._finish(probe, "UDP", False, "ICMP unreachable")

    # -- HTTP, HTTPS -------------------------------------------------------------------------------------
    async def _http(self, check: Check, ip: IPAddress, port: int, probe: _Pending) -> None:
        host = check.host or (f"[{ip}]" if ip.version == 6 else str(ip))
        tls = self._ssl if check.type == "HTTPS" else None
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(check.timeout):
                reader, writer = await asyncio.open_connection(
                    str(ip), port, ssl=tls, server_hostname=(check.host or None) if tls else None)
                writer.write(f"{check.method} {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portico-health"
                             "\r\nConnection: close\r\n\r\n".encode())
                status_line = await reader.readline()
                parts = status_line.split(None, 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                    self._finish(probe, check.type, False, "not an HTTP response")
                    return
                status = int(parts[1])
                if not status_ok(check, status):
                    self._finish(probe, check.type, False, f"HTTP status {status}")
                    return
                if check.body and check.method != "HEAD":
                    body = b""
                    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):  # cut short
                        await reader.readuntil(b"\r\n\r\n")
                        while len(body) < BODY_BYTES and check.body not in body:
                            chunk = await reader.read(BODY_BYTES - len(body))
                            if not chunk:
                                break
                            body += chunk
                    if check.body not in body:
                        self._finish(probe, check.type, False, f"the body does not contain {check.body[:40]!r}")
                        return
                self._finish(probe, check.type, True, "")
        except TimeoutError:
            self._finish(probe, check.type, False, f"no answer within {check.timeout:g}s")
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            reason = "connection refused" if getattr(e, "errno", None) == errno.ECONNREFUSED else str(e) or type(
                e).__name__
            self._finish(probe, check.type, False, reason)
        finally:
            if writer is not None:
                writer.close()

    # -- bookkeeping -------------------------------------------------------------------------------------
    @staticmethod
    def _send(probe: _Pending, sock: socket.socket, packet: bytes, address: tuple[str, int]) -> None:
        """Send, and once more halfway to the deadline if no answer came: one lost packet (the first one to a
        new pod may wait on ARP/NDP) must not fail a check."""
        try:
            sock.sendto(packet, address)
        except OSError as e:
            if e.errno not in LATE_ERRORS:
                raise
            sock.sendto(packet, address)  # that error was an earlier datagram's, to someone else: now it is sent
        probe.resend = (sock, packet, address)

    def _socket(self, sockets: dict[int, socket.socket], version: int,
                open_: Callable[[int], socket.socket]) -> socket.socket:
        sock = sockets.get(version)
        if sock is None:
            sock = sockets[version] = open_(version)
        return sock

    def _finish(self, probe: _Pending, kind: str, ok: bool, why: str) -> None:
        if probe.deadline == 0:
            return  # already given up
        probe.deadline = 0
        if ok:
            self.latency(kind, time.monotonic() - probe.started)
        probe.done(ok, "" if ok else why)

    def _sweep_soon(self) -> None:
        if self._sweeper is None and self._sweeps_itself:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_SECONDS, self.sweep)

    def sweep(self) -> None:
        """While probes are out: read the TCP answers, send unanswered probes once more halfway to their deadline,
        and give up those past it (HTTP ones time out by themselves)."""
        self._sweeper = None
        for version, sock in self._raw_tcp.items():
            self._read_tcp(sock, version)
        now = time.monotonic()
        tables: list[tuple[dict[Any, list[tuple[Any, _Pending]]], str]] = [
            (self._syn, "no answer"), (self._echo, "no echo reply"), (self._datagrams, "no reply")]
        for table, why in tables:
            for key in [k for k, waiting in table.items() if waiting[0][1].deadline < now]:
                for _, probe in table.pop(key):
                    self._finish(probe, "", False, why)
            for waiting in table.values():
                probe = waiting[0][1]
                if probe.resend is not None and now >= (probe.started + probe.deadline) / 2:
                    sock, packet, address = probe.resend
                    probe.resend = None
                    with contextlib.suppress(OSError):
                        sock.sendto(packet, address)
        if self._syn or self._echo or self._datagrams:
            self._sweep_soon()


