"""dashboard/history.py: the hour of members by state is a bounded ring; rates of counters (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pcompute.dashboard.history import MemberHistory, Rates


def test_one_point_per_step_and_only_the_last_hour():
    h = MemberHistory(span=3600, step=10)
    for i in range(0, 2 * 3600, 2):          # a sample every 2 s for two hours
        h.add(float(i), {"alive": i // 100, "dead": 1})
    series = h.series(7200.0)
    assert len(h) <= 361
    assert min(series["t"]) >= 0 and max(series["t"]) <= 3600
    assert series["states"] == ["alive", "suspect", "dead", "left"]
    assert series["counts"][-1] == [7198 // 100, 0, 1, 0]   # the newest sample of the last slot wins
    assert series["t"] == sorted(series["t"], reverse=True)


def test_a_sample_from_the_past_is_ignored():
    h = MemberHistory(step=10)
    h.add(100.0, {"alive": 3})
    h.add(50.0, {"alive": 9})
    assert h.series(100.0)["counts"] == [[3, 0, 0, 0]]


@given(st.lists(st.tuples(st.floats(0, 1e5), st.integers(0, 10**6)), max_size=300))
def test_the_ring_stays_bounded_and_ordered(samples):
    h = MemberHistory(span=600, step=5)
    for t, n in sorted(samples):
        h.add(t, {"alive": n})
    assert len(h) <= 121
    now = max((t for t, _ in samples), default=0.0)
    ages = h.series(now)["t"]
    assert ages == sorted(ages, reverse=True) and all(0 <= a <= 600 for a in ages)


def test_rates_are_per_second_and_a_counter_that_went_down_restarts():
    r = Rates()
    assert r.add(0.0, {"a": 10, "b": 0}) == {}
    assert r.add(2.0, {"a": 30, "b": 5}) == {"a": 10.0, "b": 2.5}
    assert r.add(4.0, {"a": 2, "b": 5, "c": 8}) == {"a": 0.0, "b": 0.0, "c": 4.0}
