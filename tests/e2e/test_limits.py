"""A TrafficPolicy's limits, enforced in the kernel and counted: the N+1th concurrent connection refused (over all
clients and per client), a client over its connection rate dropped while another is untouched, and a
transfer held to the bandwidth limit.

The client reaches this module's pool through node-1 (a static route), from 198.18.0.100 and, as a second
client, 198.18.0.101 (added to its LAN leg for this module).
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Lab, wait_for
from tests.e2e.routed_app import HTTP, App, routed_app

POOL_CIDR = "198.18.100.96/28"
CLIENT_A, CLIENT_B = "198.18.0.100", "198.18.0.101"
APP = "lim"
# Runs in the client: one experiment, printed as JSON.
CLIENT = textwrap.dedent("""
    import json, socket, sys, threading, time
    vip, what, source = sys.argv[1], sys.argv[2], sys.argv[3]

    def connect(timeout=1.0):
        s = socket.socket()
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect((vip, 80))
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: limits\\r\\n\\r\\n")
        assert b" 200 " in s.recv(4096)
        return s

    if what == "hold":  # open N connections and keep them; then one more
        n = int(sys.argv[4])
        held = [connect() for _ in range(n)]
        try:
            connect()
            extra = "accepted"
        except ConnectionRefusedError:
            extra = "refused"
        except OSError as e:
            extra = type(e).__name__
        for s in held:
            s.close()
        time.sleep(0.2)
        try:
            connect().close()
            after = "accepted"
        except OSError as e:
            after = type(e).__name__
        print(json.dumps({"held": n, "extra": extra, "after_closing": after}))
    elif what == "burst":  # N connection attempts at once, a short patience each
        n, ok = int(sys.argv[4]), []
        def attempt():
            try:
                connect(0.5).close()
                ok.append(1)
            except OSError:
                pass
        threads = [threading.Thread(target=attempt) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"attempts": n, "accepted": len(ok)}))
    elif what == "paced":  # N connections, one every 0.3 s
        n, ok = int(sys.argv[4]), 0
        for _ in range(n):
            try:
                connect(0.5).close()
                ok += 1
            except OSError:
                pass
            time.sleep(0.3)
        print(json.dumps({"attempts": n, "accepted": ok}))
    elif what == "download":
        size = int(sys.argv[4])
        s = socket.create_connection((vip, 80), timeout=30)
        start = time.monotonic()
        s.sendall(b"GET /bytes/%d HTTP/1.1\\r\\nHost: limits\\r\\nConnection: close\\r\\n\\r\\n" % size)
        got = 0
        while chunk := s.recv(1 << 16):
            got += len(chunk)
        print(json.dumps({"bytes": got, "seconds": time.monotonic() - start}))
""")


def client(lab: Lab, vip: str, what: str, *args: str, source: str = CLIENT_A) -> Any:
    r = lab.exec_in("client", sys.executable, "-c", CLIENT, vip, what, source, *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def apply_limits(lab: Lab, limits: dict[str, Any]) -> None:
    policy = {"apiVersion": "portico.io/v1alpha1", "kind": "TrafficPolicy",
              "metadata": {"name": APP, "namespace": "default"},
              "spec": {"targetRefs": [{"kind": "Service", "name": APP}], "limits": limits}}
    lab.kubectl("apply", "-f", "-", stdin=json.dumps(policy))


def drops(lab: Lab, vip: str, kind: str) -> int | None:
    """The limit's counter in node-1's table (None until the rule is there)."""
    name = f"limit-{vip.replace('.', '-')}-tcp-80-{kind}"
    r = lab.exec_in("node-1", "nft", "-j", "list", "counter", "inet", "portico", name)
    if r.returncode != 0:
        return None
    counter = next(item["counter"] for item in json.loads(r.stdout)["nftables"] if "counter" in item)
    return int(counter["packets"])


@pytest.fixture(scope="module")
def vip(lab: Lab) -> Iterator[str]:
    with routed_app(lab, App(APP, "limits", POOL_CIDR, 2, (HTTP,), (("http", 80, "TCP"),))) as (address, _):
        lab.exec_in("client", "ip", "addr", "add", f"{CLIENT_B}/24", "dev", "eth0")
        try:
            wait_for(lambda: client(lab, address, "paced", "1")["accepted"] == 1, 20, "the VIP answers")
            yield address
        finally:
            lab.exec_in("client", "ip", "addr", "del", f"{CLIENT_B}/24", "dev", "eth0")


def test_the_connection_over_the_limit_is_refused_and_counted(lab: Lab, vip: str) -> None:
    apply_limits(lab, {"maxConnections": 3})
    wait_for(lambda: drops(lab, vip, "connections") is not None, 10, "the limit in node-1's table")
    result = client(lab, vip, "hold", "3")
    print(f"maxConnections 3: {result}")
    assert result == {"held": 3, "extra": "refused", "after_closing": "accepted"}
    assert drops(lab, vip, "connections") == 1


def test_a_client_over_its_own_limit_is_refused_while_another_is_served(lab: Lab, vip: str) -> None:
    apply_limits(lab, {"maxConnectionsPerClient": 2})
    wait_for(lambda: drops(lab, vip, "client-connections") is not None, 10, "the limit in node-1's table")
    a = client(lab, vip, "hold", "2", source=CLIENT_A)
    b = client(lab, vip, "hold", "2", source=CLIENT_B)
    print(f"maxConnectionsPerClient 2: {a} from {CLIENT_A}, {b} from {CLIENT_B}")
    assert a["extra"] == "refused" and b["extra"] == "refused"  # each client: its third refused ...
    assert a["after_closing"] == b["after_closing"] == "accepted"  # ... the two did not count against each other
    assert drops(lab, vip, "client-connections") == 2


def test_a_client_over_its_connection_rate_is_dropped_while_another_is_untouched(lab: Lab, vip: str) -> None:
    apply_limits(lab, {"connectionRatePerClient": {"perSecond": 5, "burst": 2}})
    wait_for(lambda: drops(lab, vip, "client-rate") is not None, 10, "the limit in node-1's table")
    flood = client(lab, vip, "burst", "40", source=CLIENT_A)
    calm = client(lab, vip, "paced", "5", source=CLIENT_B)
    dropped = drops(lab, vip, "client-rate")
    print(f"connectionRatePerClient 5/s burst 2: {flood} from {CLIENT_A}, {calm} from {CLIENT_B}, {dropped} dropped")
    assert flood["accepted"] <= 10, flood  # the burst and about a second's rate, of 40
    assert calm == {"attempts": 5, "accepted": 5}
    assert dropped is not None and dropped >= 30


def test_a_transfer_is_held_to_the_bandwidth_limit(lab: Lab, vip: str) -> None:
    apply_limits(lab, {"bandwidth": "8M"})  # 8 Mbit/s = 1,000,000 bytes/s
    wait_for(lambda: drops(lab, vip, "bandwidth-out") is not None, 10, "the limit in node-1's table")
    # The kernel's bucket holds a second of the rate: over a 9-second transfer that is about +11 %.
    result = client(lab, vip, "download", "10000000")
    rate = result["bytes"] / result["seconds"]
    print(f"bandwidth 8M: {result['bytes']} bytes in {result['seconds']:.2f} s = {rate * 8 / 1e6:.2f} Mbit/s; "
          f"{drops(lab, vip, 'bandwidth-out')} packets dropped by the policer")
    assert result["bytes"] > 10_000_000
    assert 0.8 * 1e6 <= rate <= 1.2 * 1e6, f"{rate * 8 / 1e6:.2f} Mbit/s for a limit of 8"
