"""The model graphs: whole-model gradients against finite differences, and the reference trainer on digits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.ops.graph import Graph
from p2pcompute.training import data, reference
from p2pcompute.training.model import Model, accuracy, init_params, loss_and_grads, step_graph


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 4), st.lists(st.integers(1, 4), max_size=2), st.integers(2, 4), st.integers(1, 5),
       st.integers(0, 2**32 - 1))
def test_the_step_graph_gives_the_gradient_of_its_loss(features, hidden, classes, batch, seed):
    model = Model(features, tuple(hidden), classes)
    rng = np.random.default_rng(seed)
    params = init_params(model, rng)
    params = {n: p + 0.1 * rng.standard_normal(p.shape) for n, p in params.items()}  # nonzero biases
    x = rng.standard_normal((batch, features))
    y = rng.integers(0, classes, batch)
    _, _, grads = loss_and_grads(model, params, x, y)
    eps = 1e-6
    for name, p in params.items():
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + eps
            up = loss_and_grads(model, params, x, y)[0]
            p[i] = old - eps
            down = loss_and_grads(model, params, x, y)[0]
            p[i] = old
            # (a pre-activation within eps of relu's kink would break this; random draws make it ~1e-6 likely)
            assert abs((up - down) / (2 * eps) - grads[name][i]) < 1e-5 + 1e-4 * abs(grads[name][i]), name


def test_the_step_graph_survives_serialization_as_the_executor_gets_it():
    model = Model(64, (16,), 10)
    graph = step_graph(model, 8)
    assert graph.opset == 2
    again = Graph.from_cbor(graph.to_cbor())
    assert again.digest() == graph.digest()
    rng = np.random.default_rng(1)
    params = init_params(model, rng)
    feeds = {"x": rng.random((8, 64)), "y": rng.integers(0, 10, 8), **params}
    a, b = graph.run(feeds), again.run(feeds)
    assert set(a) == {"loss", "correct", "grad.W0", "grad.b0", "grad.W1", "grad.b1"}
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_the_reference_trainer_reaches_95_percent_on_digits():
    split = data.digits(seed=0)
    model = Model(64, (32,), 10)
    before = accuracy(model, init_params(model, np.random.default_rng(0)), split.x_test, split.y_test)
    result = reference.train(model, split, epochs=4, batch=32, lr=0.1, momentum=0.9, seed=0)
    assert before < 0.3 and result.test_accuracy >= 0.95
    assert result.steps == 4 * (len(split.y_train) // 32) and len(result.curve) == 4


def test_the_local_steps_graph_equals_h_step_graphs_with_sgd():
    from p2pcompute.training.model import local_graph
    from p2pcompute.training.optim import Sgd

    model, batch, steps = Model(6, (5,), 3), 4, 3
    rng = np.random.default_rng(2)
    params = init_params(model, rng)
    x, y = rng.standard_normal((steps * batch, 6)), rng.integers(0, 3, steps * batch)
    graph = local_graph(model, batch, steps, 0.05, 0.9)
    assert graph.opset == 2 and len(graph.nodes) < 200
    out = Graph.from_cbor(graph.to_cbor()).run({"x": x, "y": y, **params})
    local, opt = params, Sgd(0.05, 0.9)
    for j in range(steps):
        rows = slice(j * batch, (j + 1) * batch)
        loss, _, grads = loss_and_grads(model, local, x[rows], y[rows])
        local = opt.step(local, grads)
    for n in params:
        np.testing.assert_allclose(out[f"delta.{n}"], local[n] - params[n], rtol=1e-12, atol=1e-15)
        assert np.abs(out[f"delta.{n}"]).max() > 0
    assert float(out["loss"]) == loss


def test_check_update_refuses_what_cannot_be_aggregated():
    from p2pcompute.training.model import check_update

    model = Model(4, (3,), 2)
    good = init_params(model, np.random.default_rng(0))
    assert check_update(model, good) == ""
    assert check_update(model, {**good, "W0": np.full((4, 3), np.nan)}) == ""  # values: the rule's business
    assert "mapping" in check_update(model, [1, 2])
    assert "not the parameters" in check_update(model, {"W0": good["W0"]})
    assert "float64[4, 3]" in check_update(model, {**good, "W0": good["W0"].T})
    assert "float64[3]" in check_update(model, {**good, "b0": good["b0"].astype(np.float32)})
    assert "got list" in check_update(model, {**good, "b1": [0.0, 0.0]})
