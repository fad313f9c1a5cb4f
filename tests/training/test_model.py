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
