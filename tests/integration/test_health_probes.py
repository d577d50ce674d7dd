"""The probers against real sockets: a "node" namespace probes a "pod" namespace over a veth pair, with the
lab's echo backend answering HTTP and UDP, and ports where nothing listens."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from portico.dev.netns import run_in_netns
from portico.health.checks import Check
from portico.health.probers import Probers

ID = uuid.uuid4().hex[:6]
NODE, POD = f"hp-node-{ID}", f"hp-pod-{ID}"
POD4, POD6, NOBODY4 = "198.19.252.2", "fd00:198:18:252::2", "198.19.252.3"


@pytest.fixture(scope="module")
def pod() -> Iterator[None]:
    steps = [["ip", "netns", "add", NODE], ["ip", "netns", "add", POD],
             ["ip", "-n", NODE, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", POD]]
    for ns, address, peer in ((NODE, "198.19.252.1/24", "fd00:198:18:252::1/64"),
                              (POD, f"{POD4}/24", f"{POD6}/64")):
        dev = "veth0" if ns == NODE else "eth0"
        steps += [["ip", "-n", ns, "link", "set", "lo", "up"], ["ip", "-n", ns, "addr", "add", address, "dev", dev],
                  ["ip", "-n", ns, "addr", "add", peer, "dev", dev, "nodad"],
                  ["ip", "-n", ns, "link", "set", dev, "up"]]
    server = None
    try:
        for step in steps:
            subprocess.run(step, check=True)
        server = subprocess.Popen(["ip", "netns", "exec", POD, sys.executable, "-m", "portico.dev.echo", "--pod", "p",
                                   "--node", "n", "--listen=8080/TCP", "--listen=5353/UDP"])
        deadline = time.monotonic() + 10
        while subprocess.run(["ip", "netns", "exec", POD, "ss", "-Hltn", "sport = :8080"], capture_output=True,
                             text=True, check=False).stdout.strip() == "":
            assert time.monotonic() < deadline, "echo did not start"
            time.sleep(0.05)
        # Neighbour discovery on a fresh link can take a second: settled first (pings until both answer).
        while probe_all([(check("ICMP"), POD4, 0), (check("ICMP"), POD6, 0)]) != [(True, "")] * 2:
            assert time.monotonic() < deadline, "the pod's addresses do not answer"
        yield
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        for ns in (POD, NODE):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _settle(future: asyncio.Future[tuple[bool, str]], ok: bool, why: str) -> None:
    if not future.done():
        future.set_result((ok, why))


def probe_all(cases: list[tuple[Check, str, int]]) -> list[tuple[bool, str]]:
    """Every case probed at once from the node namespace; (ok, why) for each."""
    async def main() -> list[tuple[bool, str]]:
        probers = Probers()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in cases]
        for (check, ip, port), future in zip(cases, futures, strict=True):
            probers.start(check, ipaddress.ip_address(ip), port,
                          functools.partial(_settle, future))
        try:
            return list(await asyncio.gather(*futures))
        finally:
            probers.close()
    return run_in_netns(NODE, main)


def check(type: str, **fields: object) -> Check:
    return Check(type=type, interval=1, timeout=0.5, rise=1, fall=1, **fields)  # type: ignore[arg-type]


@pytest.mark.usefixtures("pod")
def test_every_probe_kind_tells_up_from_down() -> None:
    cases = [
        (check("TCP"), POD4, 8080, True, ""),
        (check("TCP"), POD6, 8080, True, ""),
        (check("TCP"), POD4, 8081, False, "connection refused (reset)"),
        (check("TCP"), NOBODY4, 8080, False, "no answer"),
        (check("HTTP"), POD4, 8080, True, ""),
        (check("HTTP"), POD6, 8080, True, ""),
        (check("HTTP", body=b'"node": "n"'), POD4, 8080, True, ""),
        (check("HTTP", body=b"nowhere"), POD4, 8080, False, "the body does not contain b'nowhere'"),
        (check("HTTP", statuses=((500, 599),)), POD4, 8080, False, "HTTP status 200"),
        (check("HTTP"), POD4, 8081, False, "connection refused"),
        (check("UDP", send=b"ping"), POD4, 5353, True, ""),
        (check("UDP", send=b"ping", expect=b'"pod": "p"'), POD6, 5353, True, ""),
        (check("UDP", send=b"ping", expect=b"pong"), POD4, 5353, False, "the reply does not contain b'pong'"),
        (check("UDP", send=b"ping"), POD4, 5354, False, "ICMP unreachable"),
        (check("UDP", send=b"ping"), POD6, 5354, False, "ICMP unreachable"),
        (check("ICMP"), POD4, 0, True, ""),
        (check("ICMP"), POD6, 0, True, ""),
        (check("ICMP"), NOBODY4, 0, False, "no echo reply"),
    ]
    results = probe_all([(c, ip, port) for c, ip, port, _, _ in cases])
    for (c, ip, port, ok, why), got in zip(cases, results, strict=True):
        assert got == (ok, why), f"{c.type} {ip}:{port}"
