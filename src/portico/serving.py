"""Each process's HTTP endpoint: /metrics (Prometheus), /healthz (liveness), /readyz (readiness).

Served from a thread, so a scrape or a probe never waits for the event loop's turn to accept a
connection, while everything it reports is read on the loop (`LoopBridge`): the loop owns the state
and mutates it between awaits. /healthz is the loop answering within `LIVENESS_SECONDS` (a wedged
loop is what a restart cures); /readyz is the component's own readiness check.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

T = TypeVar("T")
LIVENESS_SECONDS = 2.0
BRIDGE_TIMEOUT_SECONDS = 5.0

# A readiness check: None when ready, else why not.
Readiness = Callable[[], str | None]


class LoopBridge:
    """Runs a function on the event loop from another thread and returns its result."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the component once it runs

    def call(self, fn: Callable[[], T], timeout: float = BRIDGE_TIMEOUT_SECONDS) -> T:
        loop = self.loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            return fn()  # no loop to race with, or already on it
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except Exception as e:
                done.set_exception(e)
        loop.call_soon_threadsafe(run)
        return done.result(timeout=timeout)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never holds up a probe


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no access log
        pass


def serve(address: str, port: int, registry: CollectorRegistry, bridge: LoopBridge,
          ready: Readiness) -> WSGIServer:
    """Start the endpoint in a daemon thread; returns the server (its port, when asked for port 0)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            try:
                bridge.call(lambda: None, timeout=LIVENESS_SECONDS)
                return _text(start_response, "200 OK", "ok")
            except concurrent.futures.TimeoutError:
                return _text(start_response, "503 Service Unavailable",
                             f"event loop did not answer within {LIVENESS_SECONDS:.0f} s")
        if path == "/readyz":
            why = bridge.call(ready)
            return _text(start_response, "200 OK", "ok") if why is None else _text(
                start_response, "503 Service Unavailable", why)
        if path == "/metrics":
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        return _text(start_response, "404 Not Found", "/metrics, /healthz, /readyz")

    server = make_server(address, port, app, server_class=_Server6 if ":" in address else _Server,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server


def _text(start_response: Callable[..., Any], status: str, body: str) -> list[bytes]:
    data = (body + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]
