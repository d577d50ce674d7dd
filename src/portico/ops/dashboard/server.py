"""The dashboard's web server (the edge), on aiohttp: one static page whose script asks for a view's document as
Server-Sent Events — sent at once, then again whenever it changes — so the page follows the cluster without a
reload. Documents are made by portico.ops.dashboard.views from one Snapshot per tick (the user's kubeconfig: their
RBAC, nothing new in the cluster) and what Prometheus says, when one is given.

Read-only by construction: GET routes only, no cookies, bound to loopback unless told otherwise, and a Content
Security Policy that allows this page's own scripts and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from lightkube import AsyncClient

from portico.ops import facts
from portico.ops.dashboard import views
from portico.ops.prometheus import Prometheus
from portico.ops.snapshot import Snapshot, read

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-store"}
RATE_WINDOW = "30s"  # of the traffic graph's rate()


class Dashboard:
    def __init__(self, client: AsyncClient, prometheus: Prometheus | None, *, interval: float = 1.0) -> None:
        self.client, self.prometheus, self.interval = client, prometheus, interval
        self._snapshots: dict[str | None, tuple[float, Snapshot]] = {}  # per Events namespace: when read, what
        self._lock = asyncio.Lock()

    async def snapshot(self, events_in: str | None = None) -> Snapshot:
        """One read per tick, shared by every open page."""
        async with self._lock:
            held = self._snapshots.get(events_in)
            if held is None or time.monotonic() - held[0] >= self.interval:
                held = (time.monotonic(), await read(self.client, events_in=events_in))
                self._snapshots[events_in] = held
            return held[1]

    async def document(self, view: str) -> dict[str, Any] | None:
        """view: overview, nodes, or vip/KIND/NAMESPACE/NAME (KIND service or gateway); None: no such VIP."""
        parts = view.strip("/").split("/")
        if parts == ["nodes"]:
            snap = await self.snapshot()
            return views.nodes(snap, await self._sync_p99(snap))
        if len(parts) == 4 and parts[0] == "vip" and parts[1] in ("service", "gateway"):
            _, kind, namespace, name = parts
            snap = await self.snapshot(events_in=namespace)
            return await self._vip(snap, kind, namespace, name)
        snap = await self.snapshot()
        return views.overview(snap, await self._ask(lambda p: p.alerts()))

    async def _vip(self, snap: Snapshot, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        services = views.backend_services(snap, kind, namespace, name)
        address = name
        if kind == "gateway" and (gw := facts.find(snap.gateways, namespace, name)) and (
                svc := facts.gateway_address_service(snap, gw)):
            address = svc["metadata"]["name"]
        selector = "|".join(f"{namespace}/{s}" for s in services) or "-"
        up = await self._ask(lambda p: p.query(f'portico_backend_up{{service=~"{selector}"}}'))
        backend_up = None if up is None else {views.endpoint_address(s.labels.get("endpoint", "")): s.value
                                              for s in up}
        traffic = await self._ask(lambda p: p.series(
            f'sum(rate(portico_frontend_packets_total{{service="{namespace}/{address}"}}[{RATE_WINDOW}]))'))
        return views.vip(snap, kind, namespace, name, backend_up=backend_up, traffic=traffic)

    async def _sync_p99(self, snap: Snapshot) -> dict[str, float] | None:
        samples = await self._ask(lambda p: p.query(
            "histogram_quantile(0.99, sum by (pod, le) (rate(portico_agent_sync_duration_seconds_bucket[5m])))"))
        if samples is None:
            return None
        node_of = {p["metadata"]["name"]: (p.get("spec") or {}).get("nodeName") for p in snap.agent_pods}
        return {node: s.value for s in samples if (node := node_of.get(s.labels.get("pod", ""))) and s.value == s.value}

    async def _ask(self, question: Callable[[Prometheus], Awaitable[Any]]) -> Any:
        """Prometheus's answer, or None when there is none (not configured, or not answering: the page says so)."""
        if self.prometheus is None:
            return None
        try:
            return await question(self.prometheus)
        except Exception as e:
            log.warning("prometheus: %s", e)
            return None

    # -- HTTP -------------------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[_headers])
        app.router.add_get("/", self._index)
        app.router.add_get("/api/{view:.*}", self._api)
        app.router.add_get("/events", self._events)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        return app

    async def _index(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _api(self, request: web.Request) -> web.Response:
        document = await self.document(request.match_info["view"])
        if document is None:
            raise web.HTTPNotFound(text="no such VIP")
        return web.json_response(document)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        view = request.query.get("view", "overview")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **SECURITY_HEADERS})
        await response.prepare(request)
        last = None
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while True:
                try:
                    text = json.dumps(await self.document(view), sort_keys=True)
                except Exception as e:  # the API server away, say: the page shows it and keeps trying
                    log.warning("reading the cluster: %s", e)
                    text = json.dumps({"error": f"cannot read the cluster: {e}"})
                if text != last:
                    await response.write(f"data: {text}\n\n".encode())
                    last = text
                await asyncio.sleep(self.interval)
        return response


@web.middleware
async def _headers(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                   ) -> web.StreamResponse:
    if request.method != "GET":
        raise web.HTTPMethodNotAllowed(request.method, ["GET"])
    response = await handler(request)
    if not response.prepared:  # a stream has sent its own
        response.headers.update(SECURITY_HEADERS)
    return response


async def serve(client: AsyncClient, prometheus_url: str | None, host: str, port: int) -> None:
    prometheus = Prometheus(prometheus_url) if prometheus_url else None
    runner = web.AppRunner(Dashboard(client, prometheus).app())
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"dashboard on http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await client.close()
        if prometheus is not None:
            await prometheus.close()
