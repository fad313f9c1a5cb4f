"""The model's step graph runs as a task on the sandboxed executor and gives the bytes Graph.run gives."""

from __future__ import annotations

import numpy as np

from p2pcompute.ops import tensor_format
from p2pcompute.ops.executor import open_executor
from p2pcompute.training import data
from p2pcompute.training.model import Model, init_params, step_graph, step_task


async def test_the_step_graph_runs_on_the_executor_like_any_task(tmp_path):
    split = data.digits(seed=0)
    model = Model(64, (32,), 10)
    params = init_params(model, np.random.default_rng(0))
    x, y = split.x_train[:32], split.y_train[:32]
    want = step_graph(model, 32).run({"x": x, "y": y, **params})
    async with open_executor(cpus=1) as executor:
        result = await executor.run(step_task(model, params, x, y), tmp_path)
    assert result.ok, result.message
    got = {name: tensor_format.decode((tmp_path / info["file"]).read_bytes()) for name, info in result.outputs.items()}
    assert set(got) == set(want) == {"loss", "correct", "grad.W0", "grad.b0", "grad.W1", "grad.b1"}
    for name in want:  # same machine, single-threaded BLAS in the worker: equal, to the last bit or nearly
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-15)
