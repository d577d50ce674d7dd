"""The controller's metrics against the real API server: reconciles timed per kind, the work queue's depth,
leadership, and each pool's size and use (what the chart's alert rules read)."""

from __future__ import annotations

import pytest
from lightkube import AsyncClient
from prometheus_client import generate_latest

from portico.controller.manager import Controller
from tests.integration.controller_helpers import Scope, wait_until

pytestmark = pytest.mark.usefixtures("controller")


async def test_reconciles_are_timed_and_pool_use_is_exported(client: AsyncClient, controller: Controller) -> None:
    registry = controller.registry
    services_before = registry.get_sample_value("portico_controller_reconcile_duration_seconds_count",
                                                {"kind": "service"}) or 0
    async with Scope(client) as s:
        pool = await s.pool(["198.18.133.0/30"])
        await s.service("a")
        await s.service("b")
        await s.wait_ingress("a")
        await s.wait_ingress("b")

        async def used_twice() -> bool:
            return registry.get_sample_value("portico_pool_addresses_used", {"pool": pool, "family": "ipv4"}) == 2
        await wait_until(used_twice, 15, "the pool's use exported")
        assert registry.get_sample_value("portico_pool_addresses", {"pool": pool, "family": "ipv4"}) == 4
        assert registry.get_sample_value("portico_controller_allocated_addresses", {"pool": pool}) == 2
        assert (registry.get_sample_value("portico_controller_reconcile_duration_seconds_count",
                                          {"kind": "service"}) or 0) >= services_before + 2
        assert registry.get_sample_value("portico_controller_leader") == 1  # no election: it leads alone
        assert registry.get_sample_value("portico_controller_workqueue_depth") is not None
    text = generate_latest(registry).decode()
    assert "# TYPE portico_controller_reconcile_errors_total counter" in text
