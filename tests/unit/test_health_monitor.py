from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from portico.health.monitor import Monitor


def test_fall_failures_in_a_row_take_it_down_and_rise_successes_bring_it_back() -> None:
    m = Monitor(rise=2, fall=3)
    assert not m.observe(True)  # proven
    assert [m.observe(False, "refused") for _ in range(3)] == [False, False, True] and not m.up
    assert m.last_failure == "refused"
    assert [m.observe(True), m.observe(True)] == [False, True] and m.up
    # an interrupted run starts over
    assert [m.observe(False), m.observe(False), m.observe(True), m.observe(False), m.observe(False)] == [
        False, False, False, False, False] and m.up
    assert m.observe(False) and not m.up


def test_a_backend_sick_from_the_start_goes_down_at_its_first_check() -> None:
    m = Monitor(rise=2, fall=3)
    assert m.observe(False) and not m.up
    assert [m.observe(True), m.observe(True)] == [False, True]
    assert [m.observe(False), m.observe(False)] == [False, False] and m.up  # proven now: fall applies


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5), st.integers(1, 5))
def test_the_state_only_flips_after_a_full_run(results: list[bool], rise: int, fall: int) -> None:
    m = Monitor(rise=rise, fall=fall)
    history: list[bool] = []
    for ok in results:
        before = m.up
        flipped = m.observe(ok)
        history.append(ok)
        assert flipped == (m.up != before)
        if flipped:
            need = rise if ok else (fall if any(history[:-1]) else 1)
            assert history[-need:] == [ok] * need
