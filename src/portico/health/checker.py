"""This node's active monitors: every target probed once per interval, results counted by a Monitor, and the
set of down endpoints per Service kept for the data plane and the heartbeats.

Probes are spread over the interval (each target at its own phase, from its hash), so 10,000 targets at 1 s
are ten a millisecond, not a burst each second. A probe still out when its next turn comes is not doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from portico.health.checks import Check, Target
from portico.health.monitor import Monitor
from portico.health.probers import Probers
from portico.ipam.blocks import IPAddress

log = logging.getLogger(__name__)

Endpoint = tuple[IPAddress, int]  # (address, port), port ADDRESS for the whole address


@dataclass(frozen=True)
class Transition:
    target: Target
    check: Check
    up: bool
    why: str  # the last failure, when it went down


class HealthChecker:
    def __init__(self, on_transition: Callable[[Transition], None], probers: Probers | None = None) -> None:
        self.on_transition = on_transition
        self.probers = probers or Probers()
        self.checks: dict[str, Check] = {}  # Service -> its monitor's settings
        self.monitors: dict[Target, Monitor] = {}
        self.down: dict[str, frozenset[Endpoint]] = {}  # Service -> its local endpoints that are down
        self.probes = 0  # started, for metrics
        self._targets: dict[str, set[Target]] = {}
        self._due: list[tuple[float, int, Target]] = []
        self._order = itertools.count()
        self._turn: dict[Target, int] = {}  # target -> the order of its one live entry in _due
        self._out: set[Target] = set()  # probes in flight
        self._wake = asyncio.Event()

    def set_service(self, service: str, check: Check | None, targets: Iterable[Target]) -> bool:
        """This Service's local targets now (no check: none). Returns whether its down set changed (a target
        that went away takes its result with it). New targets start up, on probation (`Monitor`)."""
        wanted = set(targets) if check is not None else set()
        old_check = self.checks.get(service)
        current = self._targets.get(service, set())
        if check != old_check:  # other settings: every result starts over, on a schedule of its own
            current = set()
            for target in self._targets.get(service, ()):
                self.monitors.pop(target, None)
                self._turn.pop(target, None)
        for target in current - wanted:
            self.monitors.pop(target, None)
            self._turn.pop(target, None)
        now = time.monotonic()
        for target in wanted - current:
            assert check is not None
            self.monitors[target] = Monitor(check.rise, check.fall)
            phase = zlib.crc32(f"{target.ip}:{target.port}".encode()) % 1000 / 1000 * check.interval
            self._schedule(target, now + phase)
            self._wake.set()
        if wanted:
            self._targets[service], self.checks[service] = wanted, check  # type: ignore[assignment]
        else:
            self._targets.pop(service, None)
            self.checks.pop(service, None)
        before = self.down.get(service, frozenset())
        after = frozenset(t.endpoint for t in wanted if not self.monitors[t].up)
        if after:
            self.down[service] = after
        else:
            self.down.pop(service, None)
        return after != before

    def counts(self) -> dict[str, tuple[int, int]]:
        """Service -> (healthy, probed) of this node's targets."""
        return {service: (sum(1 for t in targets if self.monitors[t].up), len(targets))
                for service, targets in self._targets.items()}

    async def run(self) -> None:
        try:
            while True:
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    due, order, target = heapq.heappop(self._due)
                    check = self.checks.get(target.service)
                    if check is None or self._turn.get(target) != order:
                        continue  # gone, or rescheduled: this entry is dropped here
                    self._schedule(target, max(due + check.interval, now))
                    if target not in self._out:
                        self._out.add(target)
                        self.probes += 1
                        self.probers.start(check, target.ip, target.probe_port, self._done(target, check))
                self._wake.clear()
                delay = self._due[0][0] - time.monotonic() if self._due else None
                if delay is None or delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            self.probers.close()

    def _schedule(self, target: Target, when: float) -> None:
        order = next(self._order)
        self._turn[target] = order
        heapq.heappush(self._due, (when, order, target))

    def _done(self, target: Target, check: Check) -> Callable[[bool, str], None]:
        def done(ok: bool, why: str) -> None:
            self._out.discard(target)
            monitor = self.monitors.get(target)
            if monitor is None or self.checks.get(target.service) != check:
                return  # the target or its settings changed meanwhile
            if not monitor.observe(ok, why):
                return
            down = set(self.down.get(target.service, ()))
            (down.discard if ok else down.add)(target.endpoint)
            if down:
                self.down[target.service] = frozenset(down)
            else:
                self.down.pop(target.service, None)
            self.on_transition(Transition(target, check, ok, monitor.last_failure))
        return done
