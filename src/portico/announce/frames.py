"""ARP and IPv6 neighbour discovery frames, built and parsed as bytes (pure).

Only what an announcer needs: recognise "who has VIP?" (an ARP request, a neighbour solicitation)
and answer it, and say "VIP is at this MAC now" unasked (gratuitous ARP, unsolicited advertisement)
so neighbours' caches move at once on a takeover instead of after their entries go stale.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = b"\xff" * 6
ALL_NODES_MAC = bytes.fromhex("333300000001")
ALL_NODES = ipaddress.IPv6Address("ff02::1")
ICMPV6 = 58
NEIGHBOR_SOLICITATION, NEIGHBOR_ADVERTISEMENT = 135, 136
NA_SOLICITED, NA_OVERRIDE = 0x40, 0x20
OPT_SOURCE_LLADDR, OPT_TARGET_LLADDR = 1, 2
ARP_REQUEST, ARP_REPLY = 1, 2
ND_HOP_LIMIT = 255  # RFC 4861: anything else was forwarded, and is ignored
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_ETH = struct.Struct("!6s6sH")
_IPV6 = struct.Struct("!IHBB16s16s")


@dataclass(frozen=True)
class Solicitation:
    """Someone asks who has `target`; the answer goes to `mac` / `address`."""

    target: ipaddress.IPv4Address | ipaddress.IPv6Address
    mac: bytes
    address: ipaddress.IPv4Address | ipaddress.IPv6Address


def _ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return _ETH.pack(dst, src, ethertype) + payload


def _arp(op: int, mac: bytes, sender: ipaddress.IPv4Address, target_mac: bytes,
         target: ipaddress.IPv4Address) -> bytes:
    return _ARP.pack(1, 0x0800, 6, 4, op, mac, sender.packed, target_mac, target.packed)


def parse_arp_request(frame: bytes) -> Solicitation | None:
    if len(frame) < _ETH.size + _ARP.size or _ETH.unpack_from(frame)[2] != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, ARP_REQUEST) or spa == tpa:  # spa == tpa: gratuitous
        return None
    return Solicitation(ipaddress.IPv4Address(tpa), sha, ipaddress.IPv4Address(spa))


def arp_reply(mac: bytes, request: Solicitation) -> bytes:
    assert isinstance(request.target, ipaddress.IPv4Address) and isinstance(request.address, ipaddress.IPv4Address)
    return _ethernet(request.mac, mac, ETH_P_ARP, _arp(ARP_REPLY, mac, request.target, request.mac, request.address))


def gratuitous_arp(mac: bytes, vip: ipaddress.IPv4Address) -> bytes:
    """A broadcast request for our own address: Linux updates an existing cache entry from it."""
    return _ethernet(BROADCAST, mac, ETH_P_ARP, _arp(ARP_REQUEST, mac, vip, b"\0" * 6, vip))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _icmpv6(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, body: bytes) -> bytes:
    """An IPv6 packet carrying an ICMPv6 message (body with a zero checksum), checksum filled in."""
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(body), ICMPV6)
    body = body[:2] + struct.pack("!H", _checksum(pseudo + body)) + body[4:]
    return _IPV6.pack(6 << 28, len(body), ICMPV6, ND_HOP_LIMIT, src.packed, dst.packed) + body


def parse_neighbor_solicitation(frame: bytes) -> Solicitation | None:
    start = _ETH.size + _IPV6.size
    if len(frame) < start + 24 or _ETH.unpack_from(frame)[2] != ETH_P_IPV6:
        return None
    _, _, next_header, hop_limit, src, _ = _IPV6.unpack_from(frame, _ETH.size)
    kind, code = frame[start], frame[start + 1]
    if (next_header, hop_limit, kind, code) != (ICMPV6, ND_HOP_LIMIT, NEIGHBOR_SOLICITATION, 0):
        return None
    target = ipaddress.IPv6Address(frame[start + 8:start + 24])
    source = ipaddress.IPv6Address(src)
    mac = _ETH.unpack_from(frame)[1]
    if source.is_unspecified:  # duplicate address detection: answer to all nodes
        return Solicitation(target, ALL_NODES_MAC, ALL_NODES)
    return Solicitation(target, mac, source)


def _advertisement(mac: bytes, vip: ipaddress.IPv6Address, flags: int) -> bytes:
    return struct.pack("!BBHB3x16sBB6s", NEIGHBOR_ADVERTISEMENT, 0, 0, flags, vip.packed,
                       OPT_TARGET_LLADDR, 1, mac)


def neighbor_advertisement(mac: bytes, request: Solicitation) -> bytes:
    assert isinstance(request.target, ipaddress.IPv6Address) and isinstance(request.address, ipaddress.IPv6Address)
    solicited = 0 if request.address.is_multicast else NA_SOLICITED
    body = _advertisement(mac, request.target, solicited | NA_OVERRIDE)
    return _ethernet(request.mac, mac, ETH_P_IPV6, _icmpv6(request.target, request.address, body))


def unsolicited_advertisement(mac: bytes, vip: ipaddress.IPv6Address) -> bytes:
    """To all nodes, override set: neighbours replace the MAC they had for the VIP."""
    body = _advertisement(mac, vip, NA_OVERRIDE)
    return _ethernet(ALL_NODES_MAC, mac, ETH_P_IPV6, _icmpv6(vip, ALL_NODES, body))


def solicitation_filter() -> list[tuple[int, int, int, int]]:
    """Classic BPF for an ETH_P_IPV6 packet socket: only neighbour solicitations reach userspace, so the
    VIPs' data traffic never does."""
    load_byte, jump_eq, ret = 0x30, 0x15, 0x06
    next_header_at, icmp_type_at = _ETH.size + 6, _ETH.size + _IPV6.size
    return [
        (load_byte, 0, 0, next_header_at),
        (jump_eq, 0, 3, ICMPV6),
        (load_byte, 0, 0, icmp_type_at),
        (jump_eq, 0, 1, NEIGHBOR_SOLICITATION),
        (ret, 0, 0, 0x40000),
        (ret, 0, 0, 0),
    ]


# -- the asking side (the lab's probe): who-has requests and the answers to them -----------------------
def arp_request(mac: bytes, sender: ipaddress.IPv4Address, target: ipaddress.IPv4Address) -> bytes:
    return _ethernet(BROADCAST, mac, ETH_P_ARP, _arp(ARP_REQUEST, mac, sender, b"\0" * 6, target))


def neighbor_solicitation(mac: bytes, sender: ipaddress.IPv6Address, target: ipaddress.IPv6Address) -> bytes:
    group = ipaddress.IPv6Address(b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + target.packed[13:])  # solicited-node
    body = struct.pack("!BBH4x16sBB6s", NEIGHBOR_SOLICITATION, 0, 0, target.packed, OPT_SOURCE_LLADDR, 1, mac)
    return _ethernet(b"\x33\x33" + group.packed[12:], mac, ETH_P_IPV6, _icmpv6(sender, group, body))


def parse_answer(frame: bytes) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, bytes] | None:
    """(address, the MAC it is at) from an ARP reply or gratuitous ARP, or a neighbour advertisement."""
    if len(frame) < _ETH.size:
        return None
    ethertype = _ETH.unpack_from(frame)[2]
    if ethertype == ETH_P_ARP and len(frame) >= _ETH.size + _ARP.size:
        *_, op, sha, spa, _, tpa = _ARP.unpack_from(frame, _ETH.size)
        if op == ARP_REPLY or (op == ARP_REQUEST and spa == tpa):
            return ipaddress.IPv4Address(spa), sha
    start = _ETH.size + _IPV6.size
    if (ethertype == ETH_P_IPV6 and len(frame) >= start + 32 and frame[start] == NEIGHBOR_ADVERTISEMENT
            and frame[start + 24] == OPT_TARGET_LLADDR):
        return ipaddress.IPv6Address(frame[start + 8:start + 24]), frame[start + 26:start + 32]
    return None
