"""The rendered HAProxy configuration, run by the real HAProxy in a network namespace of its own, in front of two
echo servers: host, path, method, header and query matching in precedence order, weighted backends, the spec's
404 and 500, and a VIP reached with the address on no interface (a local route stands in for the agent's mark)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from portico.api.gateway import HTTPRouteMatch
from portico.dataplane.haproxy import render
from portico.dataplane.l7model import Endpoint, L7Config, L7Listener, Pool, RouteEntry, WeightedPool
from tests.integration.haproxy_netns import LOOP, VIP, serving


def match(**kw: Any) -> HTTPRouteMatch:
    return msgspec.convert(kw, HTTPRouteMatch)


def entry(hosts: tuple[str, ...], m: HTTPRouteMatch, *backends: tuple[str | None, int]) -> RouteEntry:
    return RouteEntry(hosts, m, tuple(WeightedPool(p, w) for p, w in backends))


CONFIG = L7Config(
    listeners=(L7Listener(VIP, 80, "HTTP", (
        entry(("a.example",), match(path={"type": "Exact", "value": "/exact"}), ("default_v2_80", 1)),
        entry(("a.example",), match(path={"type": "PathPrefix", "value": "/v2"}), ("default_v2_80", 1)),
        entry(("a.example",), match(method="POST"), ("default_v2_80", 1)),
        entry(("a.example",), match(headers=[{"name": "X-Canary", "value": "it's on"}]), ("default_v2_80", 1)),
        entry(("a.example",), match(queryParams=[{"name": "v", "value": "2"}]), ("default_v2_80", 1)),
        entry(("*.wild.example",), match(), ("default_v1_80", 1), ("default_v2_80", 1)),
        entry(("broken.example",), match(), ("default_v1_80", 1), (None, 1)),
        entry(("a.example",), match(), ("default_v1_80", 1)),
    )),),
    pools=(Pool("default_v1_80", (Endpoint(LOOP, 9001),)), Pool("default_v2_80", (Endpoint(LOOP, 9002),))),
)


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    echo = [[sys.executable, "-m", "portico.dev.echo", "--pod", pod, "--node", "n", f"--listen={port}/TCP"]
            for pod, port in (("v1", 9001), ("v2", 9002))]
    with serving(CONFIG, tmp_path_factory.mktemp("haproxy"), [(c, {}) for c in echo], "l7") as ns:
        yield ns


def get(ns: str, host: str, path: str = "/", *extra: str) -> tuple[int, str | None]:
    out = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "3", "-w", "\n%{http_code}",
                          "-H", f"Host: {host}", *extra, f"http://{VIP}{path}"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    body, _, code = out.rpartition("\n")
    pod = json.loads(body)["pod"] if code == "200" else None
    return int(code), pod


def test_the_config_serves_matches_in_precedence_order(haproxy: str) -> None:
    for _ in range(50):
        if get(haproxy, "a.example")[0] == 200:
            break
        time.sleep(0.1)
    assert get(haproxy, "a.example", "/") == (200, "v1")
    assert get(haproxy, "a.example:80", "/exact") == (200, "v2")
    assert get(haproxy, "A.Example", "/exact/more") == (200, "v1")  # Exact is exact; host case-insensitive
    assert get(haproxy, "a.example", "/v2") == (200, "v2")
    assert get(haproxy, "a.example", "/v2/x") == (200, "v2")
    assert get(haproxy, "a.example", "/v2x") == (200, "v1")  # a prefix matches whole segments only
    assert get(haproxy, "a.example", "/", "-X", "POST") == (200, "v2")
    assert get(haproxy, "a.example", "/", "-H", "X-Canary: it's on") == (200, "v2")
    assert get(haproxy, "a.example", "/?v=2") == (200, "v2")
    assert get(haproxy, "nobody.example") == (404, None)
    assert get(haproxy, "wild.example") == (404, None)  # *.wild.example is below it, not it


def test_weights_split_requests_and_unresolved_shares_get_500(haproxy: str) -> None:
    wild = Counter(get(haproxy, "x.wild.example")[1] for _ in range(200))
    assert set(wild) == {"v1", "v2"} and min(wild.values()) > 50
    broken = Counter(get(haproxy, "broken.example")[0] for _ in range(200))
    assert set(broken) == {200, 500} and min(broken.values()) > 50


def test_endpoint_slots_are_padded_for_runtime_changes() -> None:
    text = render(CONFIG, runtime_socket="/run/x.sock")
    backend = text.split("backend default_v1_80\n", 1)[1].split("\n\n", 1)[0]
    assert backend.count("server s") == 8 and backend.count(" disabled") == 7
    assert "bind ipv4@198.19.252.10:80 transparent" in text


def test_rendering_is_deterministic() -> None:
    assert render(CONFIG, runtime_socket="/s") == render(CONFIG, runtime_socket="/s")


