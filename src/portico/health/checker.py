"""This node's active monitors: every target probed once per interval, results counted by a Monitor, and the
set of down endpoints per Service kept for the data plane and the heartbeats.

Probes are spread over the interval (each target at its own phase, from its hash), so 10,000 targets at 1 s
are ten a millisecond, not a burst each second: every TICK the loop starts what is due in each Service's
round (its targets sorted by phase). A probe still out when its next turn comes is not doubled.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from portico.health.checks import Check, Endpoint, Target
from portico.health.monitor import Monitor
from portico.health.probers import Done, Probers

log = logging.getLogger(__name__)
TICK = 0.005  # the schedule's grain: probes start up to this late

Fire = Callable[[Done], None]


@dataclass(frozen=True)
class Transition:
    target: Target
    check: Check
    up: bool
    why: str  # the last failure, when it went down


@dataclass
class _Round:
    """One Service's targets in the order of their phase in the interval, and how far this round has got."""

    check: Check
    targets: list[Target]
    phases: list[float]  # seconds into the interval
    start: float  # when the current round began
    probes: list[tuple[int, Fire, Done]] = field(default_factory=list)  # per target: (its key, probe, callback)
    cursor: int = 0


def phase_of(target: Target, interval: float) -> float:
    """Where in the interval a target is probed: from its hash, the same after a restart."""
    return zlib.crc32(f"{target.ip}:{target.port}".encode()) % 1000 / 1000 * interval


class HealthChecker:
    def __init__(self, on_transition: Callable[[Transition], None], probers: Probers | None = None) -> None:
        self.on_transition = on_transition
        self.probers = probers or Probers(sweeps_itself=False)  # swept on our tick
        self.monitors: dict[Target, Monitor] = {}
        self.down: dict[str, frozenset[Endpoint]] = {}  # Service -> its local endpoints that are down
        self.probes = 0  # started, for metrics
        self._rounds: dict[str, _Round] = {}
        self._out: set[int] = set()  # probes in flight, by target key (id: no hashing on the hot path)
        self._probes: dict[Target, tuple[Fire, Done]] = {}  # its prepared probe, and what takes the result

    def set_service(self, service: str, check: Check | None, targets: Iterable[Target]) -> bool:
        """This Service's local targets now (no check: none). Returns whether its down set changed (a target
        that went away takes its result with it). New targets start up, on probation (`Monitor`)."""
        wanted = set(targets) if check is not None else set()
        held = self._rounds.get(service)
        current = set(held.targets) if held is not None and held.check == check else set()
        for target in (set(held.targets) if held is not None else set()) - current | current - wanted:
            gone = self.monitors.pop(target, None)  # gone, or its settings changed: every result starts over
            if gone is not None:
                gone.active = False
            self._probes.pop(target, None)
        for target in wanted - current:
            assert check is not None
            self.monitors[target] = Monitor(check.rise, check.fall)
            self._probes[target] = (self.probers.prepare(check, target.ip, target.probe_port),
                                    self._done(target, check))
        if check is not None and wanted:
            if held is None or held.check != check or set(held.targets) != wanted:
                ordered = sorted(wanted, key=lambda t: phase_of(t, check.interval))
                self._rounds[service] = _Round(check, ordered, [phase_of(t, check.interval) for t in ordered],
                                               held.start if held is not None and held.check == check
                                               else time.monotonic(),
                                               [(id(self.monitors[t]), *self._probes[t]) for t in ordered])
                if held is not None and held.check == check:  # carry on from where the round was
                    elapsed = time.monotonic() - held.start
                    self._rounds[service].cursor = bisect.bisect_right(self._rounds[service].phases, elapsed)
        else:
            self._rounds.pop(service, None)
        before = self.down.get(service, frozenset())
        after = frozenset(t.endpoint for t in wanted if not self.monitors[t].up)
        if after:
            self.down[service] = after
        else:
            self.down.pop(service, None)
        return after != before

    def counts(self) -> dict[str, tuple[int, int]]:
        """Service -> (healthy, probed) of this node's targets."""
        return {service: (sum(1 for t in r.targets if self.monitors[t].up), len(r.targets))
                for service, r in self._rounds.items()}

    async def run(self) -> None:
        try:
            while True:
                now = time.monotonic()
                for r in list(self._rounds.values()):
                    elapsed = now - r.start
                    if elapsed >= r.check.interval:  # a round is over: the next one starts (never two at once)
                        self._fire(r, len(r.targets))
                        r.start, r.cursor = (r.start + r.check.interval if elapsed < 2 * r.check.interval
                                             else now), 0
                        elapsed = now - r.start
                    self._fire(r, bisect.bisect_right(r.phases, elapsed))
                self.probers.sweep()
                await asyncio.sleep(TICK)
        finally:
            self.probers.close()

    def _fire(self, r: _Round, upto: int) -> None:
        """Start the probes of the round's targets up to (not including) index `upto`."""
        out = self._out
        for key, fire, done in r.probes[r.cursor:upto]:
            if key not in out:
                out.add(key)
                fire(done)
        self.probes += max(0, upto - r.cursor)
        r.cursor = max(r.cursor, upto)

    def _done(self, target: Target, check: Check) -> Done:
        monitor = self.monitors[target]
        out, key = self._out, id(monitor)

        def done(ok: bool, why: str) -> None:
            out.discard(key)
            if not monitor.active:
                return  # the target went, or its settings changed, meanwhile
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
