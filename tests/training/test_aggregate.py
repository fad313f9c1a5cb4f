"""Robust aggregation on crafted inputs: a byzantine minority cannot move the median or the trimmed
mean past the honest range; CenteredClip stays near the honest mean where the mean is carried away."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from p2pcompute.training import aggregate

HONEST = st.floats(-10, 10, width=64)
HOSTILE = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.floats(-1e12, 1e12))


@st.composite
def crowd(draw):
    """(honest rows, byzantine rows) with fewer byzantine than honest rows."""
    dim = draw(st.integers(1, 5))
    honest = draw(st.integers(1, 8))
    byz = draw(st.integers(0, honest - 1))
    h = draw(hnp.arrays(np.float64, (honest, dim), elements=HONEST))
    b = draw(hnp.arrays(np.float64, (byz, dim), elements=HOSTILE))
    return h, b


def inside_honest_range(result, honest):
    return np.all(result >= honest.min(axis=0) - 1e-9) and np.all(result <= honest.max(axis=0) + 1e-9)


@settings(max_examples=60, deadline=None)
@given(crowd(), st.randoms(use_true_random=False))
def test_a_byzantine_minority_cannot_push_the_median_past_the_honest_range(c, rnd):
    honest, byz = c
    rows = np.concatenate([honest, byz])
    rows = rows[rnd.sample(range(len(rows)), len(rows))]  # order does not matter
    assert inside_honest_range(aggregate.median(rows), honest)


@settings(max_examples=60, deadline=None)
@given(crowd(), st.integers(0, 3))
def test_a_trimmed_mean_that_trims_the_byzantine_count_stays_in_the_honest_range(c, extra):
    honest, byz = c
    rows = np.concatenate([byz, honest])
    trim = len(byz) + extra
    dropped = int((~np.all(np.isfinite(rows), axis=1)).sum())  # non-finite rows count against trim
    if 2 * max(0, trim - dropped) >= len(rows) - dropped:
        with pytest.raises(ValueError):
            aggregate.trimmed_mean(rows, trim)
        return
    assert inside_honest_range(aggregate.trimmed_mean(rows, trim), honest)


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.float64, st.tuples(st.integers(3, 9), st.integers(1, 4)), elements=HONEST), st.integers(0, 4))
def test_the_trimmed_mean_is_scipys_and_the_rules_agree_on_identical_rows(rows, trim):
    if 2 * trim < len(rows):
        np.testing.assert_allclose(aggregate.trimmed_mean(rows, trim),
                                   stats.trim_mean(rows, trim / len(rows), axis=0), rtol=1e-12, atol=1e-12)
    same = np.repeat(rows[:1], len(rows), axis=0)
    for name in aggregate.RULES:
        np.testing.assert_allclose(aggregate.rule(name, 1)(same), rows[0], atol=1e-9)


@pytest.mark.parametrize("attack", ["sign_flip", "scaled", "biased"])
def test_the_three_attacks_against_each_rule(attack):
    rng = np.random.default_rng(3)
    truth = rng.standard_normal(50)
    honest = truth + 0.1 * rng.standard_normal((16, 50))
    n_byz = 4  # 20%
    if attack == "sign_flip":
        byz = -10 * honest[:n_byz]
    elif attack == "scaled":
        byz = 1e6 * rng.standard_normal((n_byz, 50))
    else:  # slightly biased values, all in one direction
        byz = honest[:n_byz] + 0.3
    rows = np.concatenate([honest, byz])
    honest_mean = honest.mean(axis=0)
    err = {name: np.linalg.norm(aggregate.rule(name, n_byz)(rows) - honest_mean) for name in aggregate.RULES}
    spread = np.linalg.norm(0.1 * np.ones(50))  # one honest row's distance from the truth, about
    for name in ("median", "trimmed_mean", "centered_clip"):
        assert err[name] < spread, (name, err)
    for name in ("median", "trimmed_mean"):
        assert inside_honest_range(aggregate.rule(name, n_byz)(rows), honest)
    if attack != "biased":
        assert err["mean"] > 10 * spread  # the plain mean is carried away


def test_nan_rows_are_dropped_and_all_bad_is_refused():
    rows = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, np.inf], [1.0, 4.0]])
    np.testing.assert_array_equal(aggregate.median(rows), [1.0, 3.0])
    np.testing.assert_array_equal(aggregate.mean(rows), [1.0, 3.0])
    np.testing.assert_array_equal(aggregate.mean(rows, weights=np.array([1, 1, 1, 3.0])), [1.0, 3.5])
    with pytest.raises(ValueError, match="no finite"):
        aggregate.centered_clip(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="unknown"):
        aggregate.rule("krum")


@settings(max_examples=40, deadline=None)
@given(crowd(), st.integers(1, 5))
def test_coordinate_wise_rules_give_the_same_answer_by_parameter_shard(c, parts):
    honest, byz = c
    rows = np.concatenate([honest, byz])
    if parts > rows.shape[1]:
        with pytest.raises(ValueError):
            aggregate.by_parts(aggregate.median, rows, parts)
        return
    for name in ("mean", "median", "trimmed_mean"):
        combine = aggregate.rule(name, len(byz))
        try:
            whole = combine(rows)
        except ValueError:
            continue  # too few rows to trim: nothing to compare
        np.testing.assert_allclose(aggregate.by_parts(combine, rows, parts), whole, rtol=1e-12, atol=1e-12)


def test_by_parts_drops_a_row_with_one_bad_value_in_every_part():
    rows = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [100.0, np.nan], [4.0, 4.0]])
    combine = aggregate.rule("trimmed_mean", 2)  # trims 2; the NaN row counts as one of them
    np.testing.assert_array_equal(aggregate.by_parts(combine, rows, 2), combine(rows))
    np.testing.assert_array_equal(combine(rows), [2.5, 2.5])
