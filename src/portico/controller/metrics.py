"""The controller's Prometheus metrics, named as controller-runtime names its own where it has one (reconcile time
and errors per kind, work-queue depth, leadership), plus what it allocated: addresses per pool, and each pool's
size and use (what the "pool nearly full" alert reads). Collected in the metrics thread from copies of the caches
(`list(...)` of a dict is one step under the GIL)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FAMILIES = ("ipv4", "ipv6")  # the IPPool status fields, and the `family` label's values


class ReconcileMetrics:
    """Time and failures of each reconcile, by kind of work item (service, pool, trafficpolicy, gateway-api, …)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram("portico_controller_reconcile_duration_seconds",
                                  "Time to reconcile one work item, by kind", ["kind"], registry=registry,
                                  buckets=RECONCILE_BUCKETS)
        self.errors = Counter("portico_controller_reconcile_errors", "Reconciles that failed and were retried "
                              "(API errors and bugs; lost optimistic-concurrency races are not counted)", ["kind"],
                              registry=registry)

    @contextmanager
    def timed(self, kind: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.duration.labels(kind).observe(time.perf_counter() - started)


class ControllerState(Collector):
    """Gauges read when scraped: queue depth, leadership, allocations and pool usage."""

    def __init__(self, queue_depth: Callable[[], int], leading: Callable[[], bool],
                 allocations: Mapping[str, Any], pools: Mapping[str, Any]) -> None:
        self.queue_depth, self.leading = queue_depth, leading
        self.allocations, self.pools = allocations, pools

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("portico_controller_workqueue_depth", "Work items waiting to be reconciled",
                                value=self.queue_depth())
        yield GaugeMetricFamily("portico_controller_leader", "1 while this replica leads (only the leader writes)",
                                value=1 if self.leading() else 0)
        per_pool: dict[str, int] = {}
        for allocation in list(self.allocations.values()):
            pool = (allocation.get("spec") or {}).get("pool")
            if pool:
                per_pool[pool] = per_pool.get(pool, 0) + 1
        allocated = GaugeMetricFamily("portico_controller_allocated_addresses", "Addresses held by Services, "
                                      "per IPPool (its IPAllocation objects)", labels=["pool"])
        for pool, count in sorted(per_pool.items()):
            allocated.add_metric([pool], count)
        size = GaugeMetricFamily("portico_pool_addresses", "Addresses an IPPool can give, per family",
                                 labels=["pool", "family"])
        used = GaugeMetricFamily("portico_pool_addresses_used", "Addresses of an IPPool in use, per family",
                                 labels=["pool", "family"])
        for name, pool in sorted(list(self.pools.items())):
            status = pool.get("status") or {}
            for family in FAMILIES:
                if usage := status.get(family):
                    size.add_metric([name, family], usage.get("total", 0))
                    used.add_metric([name, family], usage.get("used", 0))
        yield from (allocated, size, used)
