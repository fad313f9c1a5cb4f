"""Freivalds' check of a matmul tile, the check registry, and the tolerance comparison."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.scheduler.verification.checks import CheckResult, freivalds, get_check, register_check, run_check
from p2pcompute.scheduler.verification.compare import Close
from p2pcompute.scheduler.verification.engine import Outcome


@pytest.fixture(scope="module")
def tile():
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((1024, 1024)), rng.standard_normal((1024, 1024))
    return a, b, a @ b


def test_freivalds_accepts_a_correct_1024_tile_and_catches_one_wrong_element(tile):
    a, b, c = tile
    assert freivalds(a, b, c, seed=1).ok
    for seed, (i, j, delta) in enumerate([(0, 0, 1.0), (517, 1023, 1e-6), (1023, 3, -0.25)]):
        bad = c.copy()
        bad[i, j] += delta
        verdict = freivalds(a, b, bad, seed=seed)
        assert not verdict.ok and f"row {i} of the product differs" in verdict.detail


def test_freivalds_accepts_an_honest_product_computed_in_another_order(tile):
    a, b, c = tile
    other = np.zeros_like(c)
    for k in range(0, 1024, 128):          # a blocked summation: different rounding, same product
        other += a[:, k:k + 128] @ b[k:k + 128, :]
    assert not np.array_equal(other, c)
    assert freivalds(a, b, other, seed=5).ok


def test_freivalds_float32_and_integers():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((300, 200)).astype(np.float32), rng.standard_normal((200, 100)).astype(np.float32)
    c = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)
    assert freivalds(a, b, a @ b, seed=1).ok and freivalds(a, b, c, seed=1).ok
    c[3, 4] += 0.01                    # within float32's worst-case rounding of 300 x 200 x 100: not provably wrong
    assert freivalds(a, b, c, seed=1).ok
    c[3, 4] += 5.0
    assert not freivalds(a, b, c, seed=1).ok
    ai, bi = rng.integers(-50, 50, (64, 32)), rng.integers(-50, 50, (32, 16))
    ci = ai @ bi
    assert freivalds(ai, bi, ci, seed=3).ok
    ci[0, 0] += 1
    assert not freivalds(ai, bi, ci, seed=3).ok


def test_freivalds_is_deterministic_in_its_seed_and_refuses_bad_shapes():
    a, b = np.ones((4, 3)), np.ones((3, 2))
    assert freivalds(a, b, np.ones((4, 2)), seed=9) == freivalds(a, b, np.ones((4, 2)), seed=9)
    assert not freivalds(a, b, np.ones((2, 4)), seed=1).ok
    assert not freivalds(a, b, np.full((4, 2), np.nan), seed=1).ok


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32), st.data())
def test_freivalds_never_misses_a_single_wrong_element(m, k, n, seed, data):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(-9, 9, (m, k)), rng.integers(-9, 9, (k, n))
    c = a @ b
    assert freivalds(a, b, c, seed=seed, rounds=4).ok
    i, j = data.draw(st.integers(0, m - 1)), data.draw(st.integers(0, n - 1))
    c[i, j] += data.draw(st.integers(1, 5))
    assert not freivalds(a, b, c, seed=seed, rounds=1).ok


def test_registry_runs_declared_checks_and_turns_their_errors_into_failed_checks():
    def broken(inputs, outputs, seed):
        raise ValueError("boom")
    register_check("test-broken", broken)
    assert run_check("test-broken", {}, {}, 1) == CheckResult(False, "test-broken: ValueError: boom")
    assert not run_check("nonexistent", {}, {}, 1).ok
    with pytest.raises(ValueError):
        register_check("matmul", broken)
    assert get_check("matmul") is not None
    a, b = np.eye(3), np.arange(9.0).reshape(3, 3)
    assert run_check("matmul", {"A": a, "B": b}, {"C": b}, 4).ok
    assert not run_check("matmul", {"A": a}, {"C": b}, 4).ok


def test_close_is_symmetric_and_strict_about_shapes_dtypes_and_nans():
    c = Close(rtol=1e-6, atol=0.0)
    x = Outcome.of("a", {"o": "1"})
    y = Outcome.of("b", {"o": "2"})
    ok = lambda u, v: c.same(x, {"o": np.asarray(u)}, y, {"o": np.asarray(v)})   # noqa: E731
    assert ok([1.0, np.nan, np.inf], [1.0 + 1e-9, np.nan, np.inf])
    assert not ok([1.0], [1.1]) and not ok([1.0], [[1.0]]) and not ok([1.0], [1])
    assert not ok([np.nan], [1.0]) and not ok([np.inf], [-np.inf])
    assert ok([1, 2], [1, 2]) and not ok([1, 2], [1, 3])
    assert c.same(x, None, x, None)                       # same CIDs: nothing to load
    assert not c.same(x, None, y, None)                   # different CIDs and no tensors: not shown to agree


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8), st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=8))
def test_close_does_not_depend_on_order(u, v):
    c = Close(rtol=1e-3, atol=1e-3)
    n = min(len(u), len(v))
    x, y = Outcome.of("a", {"o": "1"}), Outcome.of("b", {"o": "2"})
    tu, tv = {"o": np.asarray(u[:n])}, {"o": np.asarray(v[:n])}
    assert c.same(x, tu, y, tv) == c.same(y, tv, x, tu)


def test_a_split_matmul_tile_declares_the_matmul_check_and_its_operands_are_the_slices(tile):
    from p2pcompute.ops.graph import Graph
    from p2pcompute.scheduler.plan import tile_graph
    from p2pcompute.scheduler.verification.checks import graph_check, matmul_operands

    a, b, _ = tile
    g = tile_graph("A", "B", (256, 512), (0, 256))
    assert graph_check(g) == "matmul"
    ops = matmul_operands(g, {"A": a, "B": b})
    assert list(ops) == ["a_rows", "b_cols"] and ops["a_rows"].shape == (256, 1024)
    block = g.run({"A": a, "B": b})["block"]
    assert run_check("matmul", ops, {"block": block}, seed=1).ok
    block[17, 200] *= 1.0001
    assert not run_check("matmul", ops, {"block": block}, seed=1).ok
    plain = Graph.from_dict({"opset": 1, "inputs": {"x": {}, "y": {}},
                             "nodes": [{"name": "p", "op": "matmul", "inputs": ["x", "y"]}], "outputs": ["p"]})
    assert graph_check(plain) == "matmul" and list(matmul_operands(plain, {"x": a[:4], "y": b})) == ["x", "y"]
    mean = Graph.from_dict({"opset": 1, "inputs": {"x": {}},
                            "nodes": [{"name": "m", "op": "reduce_mean", "inputs": ["x"]}], "outputs": ["m"]})
    assert graph_check(mean) is None
