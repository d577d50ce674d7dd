"""A TrafficPolicy's layer-7 meaning as HAProxy serves it (the real HAProxy in a network namespace, three of
upstream's echo-basic behind it): cookie persistence (the cookie pins a client to its pod, and lets go when that pod
leaves rotation through the runtime API), client-address persistence, per-client request rates answered 429,
least-connections; and what every pool gets: X-Forwarded-For/-Proto and an access log line per request."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from portico.api.gateway import HTTPRouteMatch
from portico.dataplane.l7model import (
    ClientPersistence,
    CookiePersistence,
    Endpoint,
    L7Config,
    L7Listener,
    Pool,
    PoolPolicy,
    RouteEntry,
    WeightedPool,
)
from portico.dev.gateway_api import build
from tests.curl import curl_json
from tests.integration.haproxy_netns import LOOP, VIP, serving

PODS = {"a": 9111, "b": 9112, "c": 9113}
THREE = tuple(Endpoint(LOOP, port) for port in PODS.values())
POLICIES = {
    "cookie": PoolPolicy(persistence=CookiePersistence("PSESS", idle_seconds=60, absolute_seconds=600,
                                                       permanent=True)),
    "client": PoolPolicy(persistence=ClientPersistence(60)),
    "rate": PoolPolicy(request_rate=(5, 1)),
    "leastconn": PoolPolicy(balance="leastconn"),
    "plain": PoolPolicy(),
}


def entry(pool: str) -> RouteEntry:
    match = msgspec.convert({"path": {"type": "PathPrefix", "value": "/"}}, HTTPRouteMatch)
    return RouteEntry((f"{pool}.example",), match, (WeightedPool(pool, 1),))


CONFIG = L7Config((L7Listener(VIP, 80, "HTTP", tuple(entry(name) for name in POLICIES)),),
                  tuple(Pool(name, THREE, policy) for name, policy in POLICIES.items()))


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    echo = str(build() / "echo-basic")
    backends = [([echo], {"HTTP_PORT": str(port), "POD_NAME": pod, "H2C_PORT": str(port + 100)})
                for pod, port in PODS.items()]
    directory = tmp_path_factory.mktemp("haproxy-policies")
    with serving(CONFIG, directory, backends, "l7p", access_log=True) as ns:
        deadline = time.monotonic() + 10
        while get(ns, "plain")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield ns, directory


def get(ns: str, pool: str, *headers: str) -> tuple[int, dict[str, str], dict[str, object] | None]:
    """Status, response headers, and what echo-basic saw."""
    return curl_json(ns, f"http://{VIP}/", "-H", f"Host: {pool}.example", *(a for h in headers for a in ("-H", h)))


def pods(ns: str, pool: str, *headers: str, n: int = 15) -> list[str]:
    out = []
    for _ in range(n):
        status, _, seen = get(ns, pool, *headers)
        assert status == 200 and seen is not None, status
        out.append(str(seen["pod"]))
    return out


def runtime(directory: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as s:  # no reload happens here: the one worker answers
        s.connect(str(directory / "runtime.sock"))
        s.sendall(command.encode() + b"\n")
        return s.makefile().read()


def test_a_cookie_pins_a_client_to_its_pod_until_the_pod_leaves_rotation(haproxy: tuple[str, Path]) -> None:
    ns, directory = haproxy
    assert len(set(pods(ns, "cookie"))) > 1  # without the cookie: balanced
    status, response, seen = get(ns, "cookie")
    assert status == 200 and seen is not None
    cookie = response["set-cookie"]
    assert cookie.startswith("PSESS=") and "Max-Age=600" in cookie and "HttpOnly" in cookie, cookie
    pinned = str(seen["pod"])
    value = cookie.split(";", 1)[0]
    assert set(pods(ns, "cookie", f"Cookie: {value}")) == {pinned}
    slot = list(PODS).index(pinned)  # the pod leaves rotation as an endpoint change does: the runtime API
    runtime(directory, f"set server cookie/s{slot} state maint")
    try:
        status, response, seen = get(ns, "cookie", f"Cookie: {value}")
        assert status == 200 and seen is not None and seen["pod"] != pinned
        moved = response["set-cookie"].split(";", 1)[0]
        assert moved != value and set(pods(ns, "cookie", f"Cookie: {moved}")) == {seen["pod"]}
    finally:
        runtime(directory, f"set server cookie/s{slot} state ready")


def test_client_address_persistence_keeps_a_client_on_one_pod(haproxy: tuple[str, Path]) -> None:
    ns, _ = haproxy
    assert len(set(pods(ns, "plain"))) == 3  # round robin, without persistence
    assert len(set(pods(ns, "client"))) == 1


def test_requests_over_a_clients_rate_are_answered_429(haproxy: tuple[str, Path]) -> None:
    ns, _ = haproxy
    time.sleep(1.1)  # the last second's count starts empty
    statuses = [get(ns, "rate")[0] for _ in range(15)]  # well inside a second: 5 per second + a burst of 1
    assert statuses[:6] == [200] * 6 and statuses.count(429) >= 6 and set(statuses) <= {200, 429}, statuses
    time.sleep(2.1)  # HAProxy's rate is a sliding second (refused requests count too): two seconds empty it
    assert get(ns, "rate")[0] == 200


def test_least_connections_sends_past_a_busy_pod(haproxy: tuple[str, Path]) -> None:
    """Open connections that wait on the pods (requests sent but unfinished) keep two pods busy: a new request goes
    to the third. Round robin would send one in three to each."""
    ns, _ = haproxy
    holder = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", f"""
import socket, time
held = []
for _ in range(2):
    s = socket.create_connection(("{VIP}", 80))
    s.sendall(b"POST / HTTP/1.1\\r\\nHost: leastconn.example\\r\\nContent-Length: 100\\r\\n\\r\\n")  # body never sent
    held.append(s)
    time.sleep(0.2)
time.sleep(20)
"""])
    try:
        time.sleep(1)
        assert len(set(pods(ns, "leastconn", n=6))) == 1
    finally:
        holder.kill()
        holder.wait()


def test_every_request_carries_forwarded_headers_and_is_logged(haproxy: tuple[str, Path]) -> None:
    ns, directory = haproxy
    status, _, seen = get(ns, "plain", "User-Agent: portico-log-probe")
    assert status == 200 and isinstance(seen, dict)
    headers = seen["headers"]
    assert isinstance(headers, dict)
    ipaddress.ip_address(headers["X-Forwarded-For"][0])  # the client's address
    assert headers["X-Forwarded-Proto"] == ["http"]
    deadline = time.monotonic() + 5
    while '"GET / HTTP/1.1"' not in (log := (directory / "stdout").read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in log.splitlines() if " plain/s" in line and '"GET / HTTP/1.1"' in line]
    assert lines and " 200 " in lines[-1], log[-2000:]
