"""What the operator views read from Prometheus's HTTP API (the edge): instant queries, ranges, firing alerts.
Traffic figures come from there, not from the agents directly: Prometheus already scrapes every node, keeps the
history a graph needs, and the user reaches it with the access they already have."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

TIMEOUT = 5.0


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    def __init__(self, url: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.AsyncClient(timeout=TIMEOUT)

    async def _get(self, path: str, **params: str) -> Any:
        answer = await self.client.get(f"{self.url}/api/v1/{path}", params=params)
        answer.raise_for_status()
        body = answer.json()
        if body.get("status") != "success":
            raise httpx.HTTPError(f"prometheus: {body.get('error', body)}")
        return body["data"]

    async def query(self, promql: str) -> list[Sample]:
        data = await self._get("query", query=promql)
        return [Sample(r["metric"], float(r["value"][1])) for r in data["result"]]

    async def series(self, promql: str, *, seconds: int = 900, step: int = 5) -> list[tuple[float, float]]:
        """One series (the first) over the last `seconds`: [(epoch, value)]."""
        now = time.time()
        data = await self._get("query_range", query=promql, start=f"{now - seconds:.0f}", end=f"{now:.0f}",
                               step=str(step))
        results = data["result"]
        return [(float(t), float(v)) for t, v in results[0]["values"]] if results else []

    async def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing, as Prometheus reports them."""
        data = await self._get("alerts")
        return list(data["alerts"])

    async def close(self) -> None:
        await self.client.aclose()
