"""The checker's schedule and bookkeeping, with probers that answer from a table (no sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from typing import Any

from portico.health.checker import HealthChecker, Transition
from portico.health.checks import Check, Target

IP = ipaddress.ip_address


class TableProbers:
    """Answers each probe at once: healthy unless its (address, port) is listed as sick."""

    def __init__(self) -> None:
        self.sick: set[tuple[str, int]] = set()
        self.started: list[tuple[str, str, int]] = []

    def start(self, check: Check, ip: Any, port: int, done: Any) -> None:
        self.started.append((check.type, str(ip), port))
        asyncio.get_running_loop().call_soon(done, (str(ip), port) not in self.sick, "sick")

    def prepare(self, check: Check, ip: Any, port: int) -> Any:
        return lambda done: self.start(check, ip, port, done)

    def sweep(self) -> None:
        pass

    def close(self) -> None:
        pass


def check(type: str = "TCP", **fields: Any) -> Check:
    return Check(type=type, interval=0.05, timeout=0.02, rise=2, fall=2, **fields)


async def test_probes_follow_their_check_and_results_make_the_down_set() -> None:
    probers = TableProbers()
    transitions: list[Transition] = []
    checker = HealthChecker(transitions.append, probers)  # type: ignore[arg-type]
    a, b = Target("ns/web", IP("198.19.1.2"), 8080, 8080), Target("ns/web", IP("198.19.1.3"), 8080, 8080)
    checker.set_service("ns/web", check(), [a, b])
    task = asyncio.create_task(checker.run())
    try:
        probers.sick.add(("198.19.1.3", 8080))
        await asyncio.sleep(0.3)
        assert checker.down == {"ns/web": frozenset({(IP("198.19.1.3"), 8080)})}
        assert [(t.target, t.up) for t in transitions] == [(b, False)] and transitions[0].why == "sick"
        assert checker.counts() == {"ns/web": (1, 2)}

        # Other settings: the old targets are no longer probed, the new ones start over (up, on probation).
        c = Target("ns/web", IP("198.19.1.3"), 0, 8443)
        assert checker.set_service("ns/web", check("HTTPS", port=8443), [c])  # the down set changed
        probers.started.clear()
        await asyncio.sleep(0.2)
        assert set(probers.started) == {("HTTPS", "198.19.1.3", 8443)}
        assert checker.down == {}  # 8443 is healthy
        assert checker.set_service("ns/web", None, []) is False and checker.counts() == {}
        probers.started.clear()
        await asyncio.sleep(0.1)
        assert probers.started == []
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
