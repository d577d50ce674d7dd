from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portico.dataplane.maglev import is_prime, maglev_table, table_size


def backends(n: int) -> dict[str, int]:
    return {f"198.19.{i // 250}.{i % 250 + 2}:8080": 1 for i in range(n)}


def test_table_size_is_a_prime_of_500_per_backend_then_100_stepping_by_powers_of_two() -> None:
    assert table_size(1) == 503
    assert table_size(9) == table_size(10) == table_size(16) == 8009  # a scale-down keeps the table size
    assert table_size(200) == 65537  # 128,000 would be a lot for the kernel: the cap
    assert table_size(1000) == 102407  # never below the paper's 100 per backend
    for n in (1, 7, 10, 64, 250, 700):
        size = table_size(n)
        rounded = 1 << (n - 1).bit_length()
        floor = max(min(500 * rounded, 65537), 100 * rounded)
        assert is_prime(size) and size >= floor >= 100 * n
        assert not any(is_prime(k) for k in range(floor, size))


def test_every_slot_is_filled_and_shares_are_even() -> None:
    table = maglev_table(backends(10))
    assert len(table) == 8009
    shares = Counter(table)
    assert len(shares) == 10
    assert max(shares.values()) - min(shares.values()) <= 1  # turns are taken in rounds


def test_the_table_does_not_depend_on_input_order() -> None:
    names = backends(10)
    assert maglev_table(names) == maglev_table(dict(reversed(list(names.items()))))


def test_weights_buy_proportional_shares() -> None:
    weights = {"a:1": 1, "b:1": 3}
    shares = Counter(maglev_table(weights, size=1009))
    assert abs(shares["b:1"] / 1009 - 0.75) < 0.01


def test_empty_and_zero_weight() -> None:
    assert maglev_table({}) == []
    assert maglev_table({"a:1": 0}) == []
    assert set(maglev_table({"a:1": 0, "b:1": 1})) == {"b:1"}


# The bound: 1 of 10 removed -> <= 12% remapped. Not 2^k + 1 backends: removing one there crosses a size step.
@pytest.mark.parametrize("n", [4, 6, 10, 40])
def test_removing_one_backend_remaps_little_more_than_its_share(n: int) -> None:
    names = backends(n)
    size = table_size(n)
    before = maglev_table(names)
    for gone in list(names)[:3]:
        after = maglev_table({k: v for k, v in names.items() if k != gone})  # the size it picks itself
        moved = sum(1 for a, b in zip(before, after, strict=True) if a != b)
        own = before.count(gone)
        assert own <= moved  # the removed backend's slots all moved...
        assert moved / size <= 1 / n + 0.02, f"{moved}/{size} remapped removing 1 of {n}"  # ...and few others


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, 2000), min_size=2, max_size=30), st.data())
def test_adding_a_backend_takes_slots_only_for_itself(ids: set[int], data: st.DataObject) -> None:
    names = {f"10.0.{i // 256}.{i % 256}:80": 1 for i in ids}
    size = table_size(len(names) + 1)
    before = maglev_table(names, size)
    new = data.draw(st.integers(3000, 4000).map(lambda i: f"10.1.{i // 256}.{i % 256}:80"))
    after = maglev_table({**names, new: 1}, size)
    moved = sum(1 for a, b in zip(before, after, strict=True) if a != b)
    # Maglev moves a few slots between the old backends too; with few backends that collateral reaches ~6%
    # (hypothesis found 3 -> 4 backends moving 29.2% of slots, and 2 -> 3 moving 777 of 2,003: 38.8%), so the
    # bound here is looser than the removal bound for 10 backends, which test_removing_one_backend...
    # holds at 2%. 400 random draws of 2-30 backends stay within 1/(n+1) + 3.1%.
    assert after.count(new) <= moved <= size * (1 / (len(names) + 1) + 0.06)
