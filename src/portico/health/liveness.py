"""Which peer nodes' endpoints stay in rotation, from the agents' own heartbeats (pure).

A node whose heartbeats stop is out at once: every other node leaves its endpoints out of new flows, long
before Kubernetes marks the node NotReady. When it is heard again it is back after a hold-down, which doubles
with each death in a row (within FLAP_WINDOW) so a flapping node stays out rather than taking traffic in
bursts; a node that stays up for FLAP_WINDOW is forgiven. Two rules keep a wrong belief from doing harm: a
node never takes out its own endpoints (a partitioned node keeps serving what it can reach), and a Service
whose every ready endpoint sits on dead nodes keeps them (`portico.agent.desired`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

HOLD_DOWN = 1.0  # seconds a returning node waits before its endpoints are back
MAX_HOLD_DOWN = 30.0
FLAP_WINDOW = 60.0


@dataclass
class PeerLiveness:
    alive: bool = True  # as the heartbeats say now
    since: float = 0.0  # when that last changed
    deaths: list[float] = field(default_factory=list)  # recent deaths, for the hold-down

    def hold_down(self) -> float:
        return float(min(HOLD_DOWN * 2 ** max(0, len(self.deaths) - 1), MAX_HOLD_DOWN))

    def observe(self, alive: bool, now: float) -> None:
        if alive == self.alive:
            return
        self.alive, self.since = alive, now
        if not alive:
            self.deaths = [t for t in self.deaths if now - t < FLAP_WINDOW] + [now]

    def in_rotation(self, now: float) -> bool:
        return self.alive and (not self.deaths or now - self.since >= self.hold_down())

    def next_change(self, now: float) -> float | None:
        """When `in_rotation` will next turn true by itself (the hold-down ends), if it will."""
        if self.alive and not self.in_rotation(now):
            return self.since + self.hold_down()
        return None
