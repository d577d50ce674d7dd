"""The layer-2 responder on real interfaces: a recreated interface is answered on again, and an interface the
responder cannot send on takes the node out of the running (so a peer would answer instead)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

A, B = "ptl2-a", "ptl2-b"
ADDRESS_A, ADDRESS_B, VIP = "198.19.250.1", "198.19.250.2", "198.19.250.100"
ASK = """
import socket, sys, time
from portico.announce import frames
from portico.announce.links import interface_mac
import ipaddress
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(frames.ETH_P_ARP))
s.bind(("lan0", frames.ETH_P_ARP)); s.settimeout(0.2)
mac = interface_mac("lan0")
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    s.send(frames.arp_request(mac, ipaddress.ip_address("198.19.250.2"), ipaddress.ip_address(sys.argv[2])))
    try:
        while True:
            answer = frames.parse_answer(s.recv(2048))
            if answer is not None and str(answer[0]) == sys.argv[2]:
                print(answer[1].hex()); sys.exit(0)
    except TimeoutError:
        pass
print("none")
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def wire() -> None:
    """A veth pair lan0 (in A) -- lan0 (in B), with addresses."""
    sh("ip", "link", "add", "lan0", "netns", A, "type", "veth", "peer", "name", "lan0", "netns", B)
    for ns, address in ((A, ADDRESS_A), (B, ADDRESS_B)):
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "lan0")
        sh("ip", "-n", ns, "link", "set", "lan0", "up")


@pytest.fixture
def announcer() -> Iterator[subprocess.Popen[str]]:
    for ns in (A, B):
        sh("ip", "netns", "add", ns)
    wire()
    proc = subprocess.Popen(["ip", "netns", "exec", A, sys.executable, "-m", "tests.integration.l2_host", VIP,
                             "lan0", ADDRESS_A], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for ns in (A, B):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def who_has(seconds: float = 3.0) -> str:
    """The MAC that answers ARP for the VIP from B's side, or 'none'."""
    out = subprocess.run(["ip", "netns", "exec", B, sys.executable, "-c", ASK, str(seconds), VIP],
                         capture_output=True, text=True, check=True, timeout=seconds + 10)
    return out.stdout.strip()


def mac_in_a() -> str:
    return bytes.fromhex(subprocess.run(["ip", "netns", "exec", A, sys.executable, "-c",
                                         "from portico.announce.links import interface_mac;"
                                         "print(interface_mac('lan0').hex())"], capture_output=True, text=True,
                                        check=True).stdout.strip()).hex()


def test_a_recreated_interface_is_answered_on_again(announcer: subprocess.Popen[str]) -> None:
    assert who_has() == mac_in_a()
    sh("ip", "-n", A, "link", "del", "lan0")  # the VLAN torn down ...
    time.sleep(0.5)
    wire()  # ... and made again: a new interface of the same name (and a new MAC)
    assert who_has() == mac_in_a()


def test_an_interface_it_cannot_send_on_makes_the_node_ineligible(announcer: subprocess.Popen[str]) -> None:
    assert who_has() == mac_in_a()
    # An egress filter (an admin's, a security agent's) refuses our ARP frames: send() fails with ENOBUFS.
    script = ('table netdev block {\n chain out {\n  type filter hook egress device "lan0" priority 0;\n'
              '  ether type arp drop\n }\n}\n')
    subprocess.run(["ip", "netns", "exec", A, "nft", "-f", "-"], input=script, text=True, check=True)
    assert who_has(seconds=2) == "none"
    sh("ip", "netns", "exec", A, "nft", "delete", "table", "netdev", "block")
    assert who_has(seconds=10) == mac_in_a()  # tried again after the hold-down
    announcer.kill()
    out = announcer.communicate()[0]
    assert "stopped answering for 198.19.250.100: cannot send on lan0: [Errno 105]" in out, out
