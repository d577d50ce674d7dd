"""The EventRecorder's ordering against its owner's work: Events trickle while it is busy, flow when idle."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from lightkube.models.meta_v1 import ObjectMeta

from portico.kube.events import EventRecorder


class Involved:
    apiVersion, kind = "v1", "Service"
    metadata = ObjectMeta(name="web", namespace="default", uid="u1", resourceVersion="1")


class RecordingClient:
    """Stands in for the API client: notes when each Event would have been created."""

    def __init__(self, expected: int = 0) -> None:
        self.created: list[tuple[float, str]] = []
        self.expected, self.all_created = expected, asyncio.Event()

    async def create(self, event: Any) -> None:
        self.created.append((asyncio.get_running_loop().time(), event.reason))
        if len(self.created) == self.expected:
            self.all_created.set()


async def written(busy: bool, count: int, interval: float) -> list[float]:
    client = RecordingClient(expected=count)
    recorder = EventRecorder(client, component="test", busy=lambda: busy, busy_interval=interval)  # type: ignore[arg-type]
    for i in range(count):
        recorder.record(Involved, type="Normal", reason=f"R{i}", message="m")
    task = asyncio.create_task(recorder.run())
    start = asyncio.get_running_loop().time()
    await asyncio.wait_for(client.all_created.wait(), 5)
    task.cancel()
    assert [reason for _, reason in client.created] == [f"R{i}" for i in range(count)]  # in order
    return [t - start for t, _ in client.created]


async def test_events_flow_at_once_when_idle() -> None:
    times = await written(busy=False, count=20, interval=0.05)
    assert times[-1] < 0.05  # 20 Events, no pacing at all


async def test_events_trickle_while_the_owner_is_busy() -> None:
    times = await written(busy=True, count=5, interval=0.05)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] >= 0.045 and all(g >= 0.045 for g in gaps), times


def test_a_full_queue_drops_new_events_and_counts_them() -> None:
    recorder = EventRecorder(RecordingClient(), component="test", max_queued=3)  # type: ignore[arg-type]
    for i in range(5):
        recorder.record(Involved, type="Normal", reason=f"R{i}", message="m")
    assert recorder.dropped == 2
