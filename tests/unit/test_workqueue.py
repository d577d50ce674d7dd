from __future__ import annotations

from portico.kube.workqueue import WorkQueue


async def test_back_off_doubles_per_failure_up_to_the_cap_asked_for() -> None:
    q: WorkQueue[str] = WorkQueue(base_delay=0.05, max_delay=60.0)
    delays = [q.retry("k") for _ in range(12)]
    assert delays[:3] == [0.05, 0.1, 0.2] and delays[-1] == 60.0
    contended = [q.retry("c", max_delay=0.5) for _ in range(12)]
    assert contended[:3] == [0.05, 0.1, 0.2] and max(contended) == 0.5
    q.forget("k")
    assert q.retry("k") == 0.05
