from __future__ import annotations

import ipaddress
import struct

import pytest

from portico.dev.dns import answer


def query(name: str, ident: int = 0x1234, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def header(reply: bytes) -> tuple[int, int, int, int, int, int]:
    a, b, c, d, e, f = struct.unpack("!HHHHHH", reply[:12])
    return a, b, c, d, e, f


def test_whoami_zone_gets_the_askers_address_and_port_in_additional() -> None:
    q = query("foo.bar.com")
    reply = answer(q, "198.18.0.100", 40000, "udp")
    ident, flags, qd, an, ns, ar = header(reply)
    assert (ident, flags & 0x800F, flags & 0x0400, flags & 0x0100, qd, an, ns, ar) == (
        0x1234, 0x8000, 0x0400, 0x0100, 1, 0, 0, 2)
    assert reply[12:len(q)] == q[12:]  # the question, echoed
    a_rdata = reply[len(q):].split(b"\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04", 1)[1][:4]
    assert ipaddress.ip_address(a_rdata) == ipaddress.ip_address("198.18.0.100")
    assert b"\x04_udp\x03foo\x03bar\x03com\x00" in reply and struct.pack("!HHH", 0, 0, 40000) in reply


def test_names_below_the_zone_answer_and_v4_mapped_clients_get_a() -> None:
    reply = answer(query("x.FOO.bar.com"), "::ffff:198.18.0.100", 53000, "tcp")
    assert header(reply)[5] == 2 and b"\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\xc6\x12\x00\x64" in reply


def test_v6_clients_get_aaaa() -> None:
    reply = answer(query("foo.bar.com"), "fd00:198:18::100", 1, "udp")
    assert ipaddress.ip_address("fd00:198:18::100").packed in reply and b"\x00\x1c\x00\x01" in reply


def test_everything_else_is_refused_not_forwarded() -> None:
    ident, flags, qd, an, _, ar = header(answer(query("example.com", 7), "198.18.0.100", 1, "udp"))
    assert (ident, flags & 0x000F, qd, an, ar) == (7, 5, 1, 0, 0)


def test_malformed_questions_get_formerr_and_garbage_is_an_error() -> None:
    two = bytearray(query("foo.bar.com"))
    two[5] = 2
    assert header(answer(bytes(two), "198.18.0.100", 1, "udp"))[1] & 0x000F == 1
    with pytest.raises(ValueError):
        answer(b"\x00\x01", "198.18.0.100", 1, "udp")
