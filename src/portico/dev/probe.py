"""The lab's failover meter, run inside the client host (`ip netns exec portico-client ...`).

It sends a datagram to VIP:port every `interval` on each of `flows` UDP flows (source ports) and
times the echoes: the longest stretch a flow went without one is the gap a client saw. (Behind an
ECMP router each flow sticks to one node: with several, some are on the node that fails.) Alongside,
unless `--no-arp`, it asks who has the VIP (ARP request / neighbour solicitation) at the same pace and
captures every answer: two different MACs answering one question is split brain. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import time
from collections import Counter

from portico.announce import frames
from portico.announce.links import interface_mac


def measure(vip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, *, interval: float, duration: float,
            interface: str | None, source: ipaddress.IPv4Address | ipaddress.IPv6Address,
            flows: int = 1) -> dict[str, object]:
    family = socket.AF_INET if vip.version == 4 else socket.AF_INET6
    udps = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(flows)]
    for udp in udps:
        udp.bind((str(source), 0))
        udp.connect((str(vip), port))
    raw: socket.socket | None = None
    if interface is not None:
        ethertype = frames.ETH_P_ARP if vip.version == 4 else frames.ETH_P_IPV6
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        raw.bind((interface, ethertype))
        mac = interface_mac(interface)
        if isinstance(vip, ipaddress.IPv4Address) and isinstance(source, ipaddress.IPv4Address):
            question = frames.arp_request(mac, source, vip)
        elif isinstance(vip, ipaddress.IPv6Address) and isinstance(source, ipaddress.IPv6Address):
            question = frames.neighbor_solicitation(mac, source, vip)
        else:
            raise SystemExit("--source must be of the VIP's family")
    start = time.monotonic()
    last_echo = dict.fromkeys(udps, start)
    gaps: list[tuple[float, float]] = []  # (gap seconds, when it ended, relative to start)
    sent = echoed = 0
    rounds: list[set[bytes]] = []
    macs: Counter[str] = Counter()
    next_send = start
    while (now := time.monotonic()) < start + duration:
        if now >= next_send:
            for udp in udps:
                udp.send(b"probe")
            if raw is not None:
                raw.send(question)
            rounds.append(set())
            sent += 1
            next_send += interval
        readable, _, _ = select.select([*udps, *([raw] if raw else [])], [], [],
                                       max(0.0, next_send - time.monotonic()))
        for sock in readable:
            if sock is not raw:
                try:
                    sock.recv(4096)
                except ConnectionRefusedError:  # ICMP unreachable: not an answer
                    continue
                t = time.monotonic()
                echoed += 1
                gaps.append((t - last_echo[sock], t - start))
                last_echo[sock] = t
            else:
                frame, address = sock.recvfrom(2048)
                answer = frames.parse_answer(frame)
                if answer is not None and answer[0] == vip and address[2] != 4 and rounds:  # 4: our own
                    rounds[-1].add(answer[1])
                    macs[answer[1].hex(":")] += 1
    end = time.monotonic()
    gaps += [(end - t, end - start) for t in last_echo.values()]
    worst = max(gaps)
    return {
        "sent": sent * flows, "echoed": echoed, "max_gap_ms": round(worst[0] * 1000, 1),
        "gap_ended_at_s": round(worst[1], 3),
        "split_brain_rounds": sum(1 for r in rounds if len(r) > 1) if raw else None,
        "unanswered_rounds": sum(1 for r in rounds if not r) if raw else None,
        "answering_macs": dict(macs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("vip", type=ipaddress.ip_address)
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--interface", default="eth0", help="where to ask who has the VIP")
    parser.add_argument("--no-arp", action="store_true", help="only datagrams (a VIP behind a router)")
    parser.add_argument("--flows", type=int, default=1, help="UDP flows (source ports) at once")
    parser.add_argument("--source", type=ipaddress.ip_address, required=True, help="this host's address")
    args = parser.parse_args()
    print(json.dumps(measure(args.vip, args.port, interval=args.interval, duration=args.duration,
                             interface=None if args.no_arp else args.interface, source=args.source,
                             flows=args.flows)))


if __name__ == "__main__":
    main()
