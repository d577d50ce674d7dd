"""HTTPRoute filters as HAProxy serves them (the real HAProxy in a network namespace, upstream's echo-basic
behind it reporting the request it received): request and response header edits, redirects (host, scheme, port,
path, status, the query kept), URL rewrites (host, full path, prefix), a backendRef's own header edits applied
only when it is the one picked, a rule's timeout, and listeners sharing a port isolated by hostname."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from portico.api.gateway import HTTPRouteMatch
from portico.dataplane.l7model import (
    Endpoint,
    Filters,
    HeaderEdits,
    L7Config,
    L7Listener,
    NewPath,
    Pool,
    Redirect,
    Rewrite,
    RouteEntry,
    WeightedPool,
)
from portico.dev.gateway_api import build
from tests.integration.haproxy_netns import LOOP, VIP, serving


def prefix(path: str) -> HTTPRouteMatch:
    return msgspec.convert({"path": {"type": "PathPrefix", "value": path}}, HTTPRouteMatch)


def to_a(path: str, filters: Filters) -> RouteEntry:
    return RouteEntry(("",), prefix(path), (WeightedPool("a", 1),), filters)


REDIRECTS = (
    to_a("/host", Filters(redirect=Redirect(302, hostname="example.org"))),
    to_a("/scheme", Filters(redirect=Redirect(301, scheme="https"))),
    to_a("/port", Filters(redirect=Redirect(302, port=8083))),
    to_a("/old-prefix", Filters(redirect=Redirect(302, path=NewPath("/new", replace_prefix=True)))),
    to_a("/full", Filters(redirect=Redirect(303, path=NewPath("/replaced", replace_prefix=False)))),
)
CONFIG = L7Config(
    listeners=(
        L7Listener(VIP, 80, "HTTP", (
            to_a("/headers", Filters(
                request_headers=HeaderEdits(set=(("X-Set", "set-overwrites"),), add=(("X-Add", "appended"),),
                                            remove=("X-Remove",)),
                response_headers=HeaderEdits(set=(("X-Response", "100% 'quoted'"),), remove=("Content-Type",)))),
            *REDIRECTS,
            to_a("/rewrite-prefix", Filters(rewrite=Rewrite(hostname="rewritten.example",
                                                            path=NewPath("/", replace_prefix=True)))),
            to_a("/rewrite-full", Filters(rewrite=Rewrite(path=NewPath("/whole", replace_prefix=False)))),
            RouteEntry(("",), prefix("/canary"), (
                WeightedPool("a", 1, Filters(request_headers=HeaderEdits(set=(("X-Picked", "a"),)))),
                WeightedPool("b", 1, Filters(response_headers=HeaderEdits(add=(("X-Picked", "b"),)))))),
            RouteEntry(("",), prefix("/slow"), (WeightedPool("a", 1),), response_timeout_ms=300),
        )),
        L7Listener(VIP, 8080, "HTTP", REDIRECTS[:1]),
        L7Listener(VIP, 8081, "HTTP", (
            RouteEntry(("abc.foo.example",), prefix("/abc"), (WeightedPool("a", 1),),
                       listener_hostname="abc.foo.example"),
            RouteEntry(("*.example",), prefix("/wild"), (WeightedPool("a", 1),), listener_hostname="*.example"),
            RouteEntry(("",), prefix("/any"), (WeightedPool("a", 1),)),
        ), listener_hostnames=("abc.foo.example", "*.example", "")),
    ),
    pools=(Pool("a", (Endpoint(LOOP, 9101),)), Pool("b", (Endpoint(LOOP, 9102),))),
)


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    echo = str(build() / "echo-basic")
    backends = [([echo], {"HTTP_PORT": str(port), "POD_NAME": pod, "H2C_PORT": str(port + 100)})
                for pod, port in (("a", 9101), ("b", 9102))]
    with serving(CONFIG, tmp_path_factory.mktemp("haproxy"), backends, "l7f") as ns:
        deadline = time.monotonic() + 10
        while request(ns, "/headers")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        yield ns


def request(ns: str, path: str, *headers: str, port: int = 80,
            host: str = "a.example") -> tuple[int, dict[str, list[str]], Any]:
    """Status, response headers (lower-case names), and the request echo-basic saw (None when it saw none)."""
    out = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "3", "-D", "-",
                          "-H", f"Host: {host}", *(a for h in headers for a in ("-H", h)),
                          f"http://{VIP}:{port}{path}"], capture_output=True, text=True, timeout=10, check=False).stdout
    head, _, body = out.partition("\n\n")  # text mode: curl's CRLFs read as newlines
    lines = head.splitlines()
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
    response: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        response.setdefault(name.strip().lower(), []).append(value.strip())
    return status, response, json.loads(body) if body.startswith("{") else None


def test_request_and_response_headers_are_set_added_and_removed(haproxy: str) -> None:
    status, response, seen = request(haproxy, "/headers", "X-Set: original", "X-Add: first", "X-Remove: gone",
                                     "X-Other: kept")
    assert status == 200
    assert seen["headers"]["X-Set"] == ["set-overwrites"]
    assert seen["headers"]["X-Add"] == ["first", "appended"]
    assert "X-Remove" not in seen["headers"] and seen["headers"]["X-Other"] == ["kept"]
    assert response["x-response"] == ["100% 'quoted'"] and "content-type" not in response


@pytest.mark.parametrize(("path", "port", "status", "location"), [
    ("/host/x?q=1", 80, 302, "http://example.org/host/x?q=1"),
    ("/host", 8080, 302, "http://example.org:8080/host"),  # no port asked: the listener's
    ("/scheme/x", 80, 301, "https://a.example/scheme/x"),  # a scheme asked: its well-known port, not spelled out
    ("/port?a=b", 80, 302, "http://a.example:8083/port?a=b"),
    ("/old-prefix/lemon?x=1", 80, 302, "http://a.example/new/lemon?x=1"),
    ("/old-prefix", 80, 302, "http://a.example/new"),
    ("/full/any/thing", 80, 303, "http://a.example/replaced"),
])
def test_redirects_follow_the_spec(haproxy: str, path: str, port: int, status: int, location: str) -> None:
    got, response, seen = request(haproxy, path, port=port)
    assert (got, response.get("location")) == (status, [location])
    assert seen is None  # answered by HAProxy, never sent to the backend


@pytest.mark.parametrize(("path", "host", "seen_path"), [
    ("/rewrite-prefix/one/two?k=v", "rewritten.example", "/one/two?k=v"),
    ("/rewrite-prefix", "rewritten.example", "/"),
    ("/rewrite-prefix/", "rewritten.example", "/"),
    ("/rewrite-full/x/y?k=v", "a.example", "/whole?k=v"),
])
def test_url_rewrites_change_host_and_path(haproxy: str, path: str, host: str, seen_path: str) -> None:
    status, _, seen = request(haproxy, path)
    assert status == 200 and (seen["host"], seen["path"]) == (host, seen_path)


def test_a_backend_refs_own_filters_apply_only_when_it_is_picked(haproxy: str) -> None:
    picked = set()
    for _ in range(60):
        status, response, seen = request(haproxy, "/canary")
        assert status == 200
        pod = seen["pod"]
        picked.add(pod)
        assert seen["headers"].get("X-Picked") == (["a"] if pod == "a" else None)
        assert response.get("x-picked") == (["b"] if pod == "b" else None)
    assert picked == {"a", "b"}


def test_a_rules_timeout_answers_504_past_it(haproxy: str) -> None:
    assert request(haproxy, "/slow?delay=50ms")[0] == 200
    started = time.monotonic()
    assert request(haproxy, "/slow?delay=2s")[0] == 504
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(("host", "path", "status"), [
    ("abc.foo.example", "/abc", 200),
    ("abc.foo.example", "/wild", 404),  # the exact listener owns this host: the wildcard's routes do not apply
    ("abc.foo.example", "/any", 404),
    ("x.example", "/wild", 200),
    ("x.example", "/any", 404),
    ("elsewhere.test", "/any", 200),
    ("elsewhere.test", "/wild", 404),
])
def test_listeners_sharing_a_port_are_isolated_by_hostname(haproxy: str, host: str, path: str, status: int) -> None:
    assert request(haproxy, path, port=8081, host=host)[0] == status
