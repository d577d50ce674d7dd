"""The nftables data plane in the kernel, with real packets: client -> node (our table) -> pods.

A small topology of its own (namespaces `ptdp-*`, addresses inside 198.19.240.0/20 and
fd00:198:18:f0::/60, away from the lab's) with echo servers in pod namespaces.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from portico.dataplane.local_delivery import ensure_local_delivery, remove_local_delivery
from portico.dataplane.model import Algorithm, Backend, Frontend, FrontendPolicy
from portico.dataplane.nft import Nft
from portico.dataplane.nftables import FRONTENDS, NODE, VIPS, Ruleset, frontend_key, node_fragment, render_frontend
from portico.dataplane.syncer import Syncer

ip = ipaddress.ip_address
NS = ("ptdp-client", "ptdp-node", "ptdp-pod1", "ptdp-pod2")
CLIENT4, NODE_LAN4, NODE_PODS4 = "198.19.240.2", "198.19.240.1", "198.19.241.1"
PODS4 = {"ptdp-pod1": "198.19.241.2", "ptdp-pod2": "198.19.241.3"}
PODS6 = {"ptdp-pod1": "fd00:198:18:f1::2", "ptdp-pod2": "fd00:198:18:f1::3"}
VIP4, VIP6 = ipaddress.IPv4Address("198.19.242.1"), ipaddress.IPv6Address("fd00:198:18:f2::1")


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@dataclass
class Topology:
    echo: list[subprocess.Popen[bytes]]


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        sh("ip", "netns", "add", ns)
        sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
        for key in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
            sh(*in_ns(ns, "sysctl", "-qw", key))  # no duplicate address detection delaying the first packets
    sh("ip", "-n", "ptdp-node", "link", "add", "lan", "type", "veth", "peer", "eth0", "netns", "ptdp-client")
    sh("ip", "-n", "ptdp-node", "link", "add", "pods", "type", "bridge")
    for ns, (dev, addr4, addr6) in {"ptdp-node": ("lan", NODE_LAN4, "fd00:198:18:f0::1"),
                                    "ptdp-client": ("eth0", CLIENT4, "fd00:198:18:f0::2")}.items():
        sh("ip", "-n", ns, "addr", "add", f"{addr4}/24", "dev", dev)
        sh("ip", "-n", ns, "addr", "add", f"{addr6}/64", "dev", dev, "nodad")
        sh("ip", "-n", ns, "link", "set", dev, "up")
    sh("ip", "-n", "ptdp-client", "route", "add", "198.19.242.0/24", "via", NODE_LAN4)
    sh("ip", "-n", "ptdp-client", "route", "add", "fd00:198:18:f2::/64", "via", "fd00:198:18:f0::1")
    sh("ip", "-n", "ptdp-node", "addr", "add", f"{NODE_PODS4}/24", "dev", "pods")
    sh("ip", "-n", "ptdp-node", "addr", "add", "fd00:198:18:f1::1/64", "dev", "pods", "nodad")
    sh("ip", "-n", "ptdp-node", "link", "set", "pods", "up")
    for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        sh(*in_ns("ptdp-node", "sysctl", "-qw", key))
    echo = []
    for i, pod in enumerate(PODS4, 1):
        sh("ip", "-n", "ptdp-node", "link", "add", f"veth{i}", "master", "pods", "type", "veth", "peer", "eth0",
           "netns", pod)
        sh("ip", "-n", "ptdp-node", "link", "set", f"veth{i}", "up")
        sh("ip", "-n", pod, "addr", "add", f"{PODS4[pod]}/24", "dev", "eth0")
        sh("ip", "-n", pod, "addr", "add", f"{PODS6[pod]}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", pod, "link", "set", "eth0", "up")
        sh("ip", "-n", pod, "route", "add", "default", "via", NODE_PODS4)
        sh("ip", "-n", pod, "route", "add", "default", "via", "fd00:198:18:f1::1")
        echo.append(subprocess.Popen(in_ns(pod, sys.executable, "-m", "portico.dev.echo", "--pod", pod,
                                           "--node", "ptdp-node", "--listen", "8080/TCP", "--listen", "9090/UDP")))
    for pod, addr in [*PODS4.items(), *((p, f"[{a}]") for p, a in PODS6.items())]:  # echo answers, both families
        deadline = time.monotonic() + 10
        while subprocess.run(in_ns("ptdp-node", "curl", "-s", "--max-time", "1", f"http://{addr}:8080/"),
                             capture_output=True, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"echo in {pod} did not start"
            time.sleep(0.1)
    try:
        yield Topology(echo)
    finally:
        for p in echo:
            p.kill()
            p.wait()
        for ns in NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def client(*argv: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
    return subprocess.run(in_ns("ptdp-client", *argv), capture_output=True, text=True, timeout=timeout, check=False)


def http(vip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int = 80) -> dict[str, str] | None:
    host = f"[{vip}]" if vip.version == 6 else str(vip)
    r = client("curl", "-s", "--max-time", "2", f"http://{host}:{port}/")
    return json.loads(r.stdout) if r.returncode == 0 else None


def spread(vip: ipaddress.IPv4Address | ipaddress.IPv6Address, n: int) -> Counter[str]:
    """`n` fresh TCP connections from the client, by the pod that answered."""
    code = ("import socket,sys,json,collections; c=collections.Counter()\n"
            "for _ in range(int(sys.argv[2])):\n"
            "  s=socket.create_connection((sys.argv[1],80),timeout=2); s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n"
            "Connection: close\\r\\n\\r\\n'); d=b''\n"
            "  while (b:=s.recv(4096)): d+=b\n"
            "  s.close(); c[json.loads(d.split(b'\\r\\n\\r\\n',1)[1])['pod']]+=1\n"
            "print(json.dumps(c))")
    r = client(sys.executable, "-c", code, str(vip), str(n), timeout=60)
    assert r.returncode == 0, r.stderr
    return Counter(json.loads(r.stdout))


def policy(*pods: str, family: int = 4, **kw: object) -> FrontendPolicy:
    addrs = PODS4 if family == 4 else PODS6
    return FrontendPolicy("t/echo", tuple(Backend(ip(addrs[p]), 8080) for p in pods), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def syncer(topology: Topology) -> AsyncIterator[Syncer]:
    nft = Nft(netns="ptdp-node")
    s = Syncer(nft)
    await s.sync({NODE: node_fragment([ipaddress.ip_network("198.19.241.0/24"),
                                       ipaddress.ip_network("fd00:198:18:f1::/64")])})
    yield s
    await nft.delete_table()


WEB4, WEB6 = Frontend(VIP4, "tcp", 80), Frontend(VIP6, "tcp", 80)


async def test_tcp_reaches_every_pod_and_follows_endpoint_changes(syncer: Syncer) -> None:
    result = await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1", "ptdp-pod2"))})
    assert result.kind == "partial"
    seen = spread(VIP4, 200)
    assert set(seen) == {"ptdp-pod1", "ptdp-pod2"} and min(seen.values()) > 60, seen
    got = http(VIP4)
    assert got is not None and got["client"] == CLIENT4  # local pod: the client's address is kept
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod2"))})
    assert set(spread(VIP4, 30)) == {"ptdp-pod2"}


async def test_no_ready_endpoint_refuses_at_once(syncer: Syncer) -> None:
    await syncer.sync({WEB4: render_frontend(WEB4, policy())})
    r = client("curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "--max-time", "3", f"http://{VIP4}/")
    assert r.returncode == 7, r  # "couldn't connect": a TCP reset, not a 3 s timeout
    code = ("import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2);"
            "s.connect((sys.argv[1],9090)); s.send(b'x');\n"
            "try: s.recv(100)\nexcept ConnectionRefusedError: print('refused')")
    udp = client(sys.executable, "-c", code, str(VIP4))
    assert udp.stdout.strip() == "refused"  # ICMP port unreachable


async def test_udp_ipv6_and_round_robin(syncer: Syncer) -> None:
    dns = Frontend(VIP6, "udp", 9090)
    await syncer.sync({WEB6: render_frontend(WEB6, policy("ptdp-pod1", "ptdp-pod2", family=6,
                                                          algorithm=Algorithm.ROUND_ROBIN)),
                       dns: render_frontend(dns, FrontendPolicy("t/dns", (Backend(ip(PODS6["ptdp-pod1"]), 9090),)))})
    seen = spread(VIP6, 40)
    assert seen == Counter({"ptdp-pod1": 20, "ptdp-pod2": 20})  # strict alternation
    code = ("import socket,sys; s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM); s.settimeout(2);"
            "s.sendto(b'x',(sys.argv[1],9090)); print(s.recv(4096).decode())")
    r = client(sys.executable, "-c", code, str(VIP6))
    assert json.loads(r.stdout)["pod"] == "ptdp-pod1", r.stderr


async def test_maglev_pins_a_client_and_source_ranges_drop(syncer: Syncer) -> None:
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1", "ptdp-pod2", algorithm=Algorithm.MAGLEV))})
    assert len(spread(VIP4, 30)) == 1  # one client address: one pod, every time
    only_others = (ipaddress.ip_network("198.19.250.0/24"),)
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1", source_ranges=only_others))})
    assert http(VIP4) is None


async def test_client_ip_affinity_pins_a_client_until_its_pod_goes(syncer: Syncer) -> None:
    both = policy("ptdp-pod1", "ptdp-pod2", affinity_timeout=600)
    await syncer.sync({WEB4: render_frontend(WEB4, both)})
    first = spread(VIP4, 20)
    assert len(first) == 1, first  # random picks, the pin holds
    pinned = next(iter(first))
    other = "ptdp-pod2" if pinned == "ptdp-pod1" else "ptdp-pod1"
    await syncer.sync({WEB4: render_frontend(WEB4, policy(other, affinity_timeout=600))})
    assert set(spread(VIP4, 5)) == {other}  # its pod left: the pin went with it
    await syncer.sync({WEB4: render_frontend(WEB4, both)})
    assert set(spread(VIP4, 20)) == {other}  # and the new pin holds though the old pod is back


async def test_every_policy_change_and_the_removal_is_one_clean_partial_sync(syncer: Syncer) -> None:
    """Chains that jump to each other (affinity) are created before use and removed only after every
    rule jumping to them: no transaction is refused, so no full-sync fallback."""
    ranges = (ipaddress.ip_network("198.19.250.0/24"),)
    for kw in ({"algorithm": Algorithm.ROUND_ROBIN}, {"algorithm": Algorithm.ROUND_ROBIN, "affinity_timeout": 60},
               {"affinity_timeout": 60, "source_ranges": ranges}, {"affinity_timeout": 30}, {}):
        result = await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1", "ptdp-pod2", **kw))})
        assert (result.kind, result.fallback) == ("partial", False), kw
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1", affinity_timeout=60))})
    result = await syncer.sync({WEB4: None})
    assert (result.kind, result.fallback) == ("partial", False)
    table = await syncer.nft.existing()
    assert not [c for c in table.chains if c.startswith(("fe-", "be-"))]
    assert not [o for o in table.objects if o.startswith(("aff-", "dropped-"))]


async def test_counters_for_frontends_refusals_and_source_range_drops(syncer: Syncer) -> None:
    nft = syncer.nft
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1"))})
    before = nft.read_counters(["frontend_counters4"])
    spread(VIP4, 5)
    after = nft.read_counters(["frontend_counters4"])
    key = (str(VIP4), "tcp", "80")
    packets = after.elements["frontend_counters4"][key][0] - before.elements["frontend_counters4"].get(key, (0, 0))[0]
    assert packets >= 5 * 4, after  # every packet of 5 connections from the client (SYN, ACK, request, FIN...)
    await syncer.sync({WEB4: render_frontend(WEB4, policy())})
    http(VIP4)
    assert nft.read_counters([]).named["refused4"][0] > after.named["refused4"][0]
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1", source_ranges=(
        ipaddress.ip_network("198.19.250.0/24"),)))})
    client("curl", "-s", "--max-time", "1", f"http://{VIP4}/")
    assert nft.read_counters([]).named["dropped-198-19-242-1-tcp-80"][0] >= 1


def long_lived_client(vip: ipaddress.IPv4Address) -> subprocess.Popen[str]:
    """One TCP connection that sends a request now and another after a line on its stdin."""
    code = ("import socket,sys,time\ns=socket.create_connection((sys.argv[1],80),timeout=5)\n"
            "for i in range(2):\n"
            "  s.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); print(s.recv(4096).split(b'\\r\\n\\r\\n')[1]"
            ".decode().strip(), flush=True); sys.stdin.readline()\n")
    return subprocess.Popen(in_ns("ptdp-client", sys.executable, "-c", code, str(vip)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


async def test_a_new_agent_adopts_the_table_without_breaking_established_flows(syncer: Syncer) -> None:
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1"))})
    proc = long_lived_client(VIP4)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert json.loads(proc.stdout.readline())["pod"] == "ptdp-pod1"
        sh(*in_ns("ptdp-node", "nft", "add map inet portico backends4 { type ipv4_addr : ipv4_addr; }; "
                               "add chain inet portico pick4-random-1 { ip daddr @backends4 drop; }"))  # older agent
        fresh = Syncer(Nft(netns="ptdp-node"))  # a restarted agent: knows nothing, finds the table
        fresh.kernel.apply({})
        result = await fresh.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod2")),
                                   NODE: node_fragment([ipaddress.ip_network("198.19.241.0/24")])})
        assert result.kind == "full"
        table = await fresh.nft.existing()
        assert "pick4-random-1" not in table.chains and "backends4" not in table.objects  # an older agent's: gone
        assert set(spread(VIP4, 10)) == {"ptdp-pod2"}  # new flows: the new state
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline())["pod"] == "ptdp-pod1"  # the old flow: still its pod
    finally:
        proc.kill()
        proc.wait()


async def test_a_refused_partial_sync_is_repaired_by_a_full_one(syncer: Syncer) -> None:
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1"))})
    sh(*in_ns("ptdp-node", "nft", "flush", "map", "inet", "portico", "backends4_tcp"))  # someone meddles
    result = await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod2"))})  # deleting a missing element
    assert (result.kind, result.fallback) == ("full", True)
    assert set(spread(VIP4, 10)) == {"ptdp-pod2"}


# Fragments the kernel refuses, as a bad renderer or a kernel limit would produce: one that `nft --check` catches
# (a verdict pointing at a chain that does not exist), and one refused only at commit (masquerade in a chain
# that prerouting reaches; the kernel checks hooks when the transaction commits).
BAD_VIP = ipaddress.IPv4Address("198.19.242.9")
BAD = Frontend(BAD_VIP, "tcp", 80)
CHECKED_FAULT = Ruleset(elements={VIPS[4]: {str(BAD_VIP): None}, FRONTENDS[4]: {frontend_key(BAD): "goto no-such"}})
COMMIT_FAULT = Ruleset(chains={"bad-chain": ("masquerade",)},
                       elements={VIPS[4]: {str(BAD_VIP): None}, FRONTENDS[4]: {frontend_key(BAD): "goto bad-chain"}})


def frontends_in_kernel() -> str:
    r = subprocess.run(in_ns("ptdp-node", "nft", "list", "map", "inet", "portico", "frontends4"),
                       capture_output=True, text=True, check=True)
    return r.stdout


@pytest.mark.parametrize("fault", [CHECKED_FAULT, COMMIT_FAULT], ids=["refused-by-check", "refused-at-commit"])
async def test_a_refused_fragment_is_left_out_and_the_rest_is_programmed(syncer: Syncer, fault: Ruleset) -> None:
    web4b = Frontend(VIP4, "tcp", 8080)
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1"))})
    # One batch: a new good frontend, a change to the old one, and the bad one. The partial transaction is refused
    # whole; the full sync that follows finds the bad fragment and lays everything else.
    result = await syncer.sync({BAD: fault, WEB4: render_frontend(WEB4, policy("ptdp-pod2")),
                                web4b: render_frontend(web4b, policy("ptdp-pod1"))})
    assert set(result.refused) == {BAD} and result.kind == "full"
    assert "Could not process rule" in result.refused[BAD]
    assert set(spread(VIP4, 10)) == {"ptdp-pod2"}
    assert http(VIP4, 8080) is not None
    listing = frontends_in_kernel()
    assert str(BAD_VIP) not in listing and f"{VIP4} . tcp . 8080" in listing
    # Left out, not stuck: the next change is an ordinary partial sync.
    result = await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1", "ptdp-pod2"))})
    assert (result.kind, dict(result.refused)) == ("partial", {})
    assert set(spread(VIP4, 40)) == {"ptdp-pod1", "ptdp-pod2"}
    # A fixed fragment is programmed.
    result = await syncer.sync({BAD: render_frontend(BAD, policy("ptdp-pod1"))})
    assert (result.kind, dict(result.refused)) == ("partial", {})
    assert http(BAD_VIP) is not None


async def test_a_refused_fragment_on_a_fresh_agent_leaves_the_others_programmed(syncer: Syncer) -> None:
    """A restarted agent (everything new, the old table adopted) with one Service the kernel refuses."""
    await syncer.sync({WEB4: render_frontend(WEB4, policy("ptdp-pod1"))})
    fresh = Syncer(syncer.nft)
    result = await fresh.sync({NODE: syncer.kernel.fragments[NODE], BAD: COMMIT_FAULT,
                               WEB4: render_frontend(WEB4, policy("ptdp-pod2"))})
    assert set(result.refused) == {BAD}
    assert set(spread(VIP4, 10)) == {"ptdp-pod2"}


async def test_a_table_with_an_older_agents_hook_priorities_is_adopted(syncer: Syncer) -> None:
    """Before kube-proxy coexistence, prerouting was hooked at dstnat itself; the kernel cannot move a hook."""
    await syncer.nft.delete_table()
    old = ("add table inet portico\n"
           "add chain inet portico prerouting { type nat hook prerouting priority dstnat; policy accept; }\n")
    await asyncio.to_thread(subprocess.run, in_ns("ptdp-node", "nft", "-f", "-"), input=old, text=True, check=True)
    fresh = Syncer(Nft(netns="ptdp-node"))
    result = await fresh.sync({NODE: syncer.kernel.fragments[NODE], WEB4: render_frontend(WEB4, policy("ptdp-pod1"))})
    assert result.kind == "full" and not result.refused
    assert (await fresh.nft.existing()).hooks["prerouting"] == ("nat", "prerouting", -105)
    assert set(spread(VIP4, 5)) == {"ptdp-pod1"}


TRANSPARENT_SERVER = (  # HAProxy's bind `transparent`, in a few lines: the VIP is on no interface of the node
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.setsockopt(socket.SOL_IP, 19, 1)\n"
    "s.bind((sys.argv[1], 80)); s.listen(); print('up', flush=True)\n"
    "while True:\n"
    "  c,a=s.accept(); c.recv(4096)\n"
    "  c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 13\\r\\nConnection: close\\r\\n\\r\\n'\n"
    "            b'{\"pod\":\"l7\"}\\n'); c.close()\n")


def _delivered_through_the_policy_route(vip: ipaddress.IPv4Address) -> None:
    assert ensure_local_delivery((4,), netns="ptdp-node") == []
    assert ensure_local_delivery((4,), netns="ptdp-node") == []  # idempotent: still one rule
    rules = json.loads(subprocess.run(in_ns("ptdp-node", "ip", "-j", "rule", "show", "table", "2100"),
                                      capture_output=True, text=True, check=True).stdout)
    assert len(rules) == 1
    assert http(vip) == {"pod": "l7"}
    refused = client("curl", "-s", "--max-time", "2", f"http://{vip}:81/")
    assert refused.returncode == 7  # connection refused: the VIP's other ports are still reset
    remove_local_delivery((4,), netns="ptdp-node")
    assert http(vip) is None


async def test_a_gateway_frontend_is_delivered_to_the_local_transparent_listener(syncer: Syncer) -> None:
    """deliver_local: no DNAT; the mark and its policy route take the packets to a socket bound to the VIP, which is
    on no interface. Without the route they are not delivered; other ports of the VIP are still refused."""
    vip = ipaddress.IPv4Address("198.19.242.80")
    fe = Frontend(vip, "tcp", 80)
    server = await asyncio.create_subprocess_exec(*in_ns("ptdp-node", sys.executable, "-c", TRANSPARENT_SERVER,
                                                        str(vip)), stdout=asyncio.subprocess.PIPE)
    try:
        assert server.stdout is not None and (await server.stdout.readline()).strip() == b"up"
        await syncer.sync({fe: render_frontend(fe, FrontendPolicy("t/gw", (), deliver_local=True))})
        await asyncio.to_thread(_delivered_through_the_policy_route, vip)
    finally:
        remove_local_delivery((4,), netns="ptdp-node")
        server.kill()
        await server.wait()
        await syncer.sync({fe: None})
