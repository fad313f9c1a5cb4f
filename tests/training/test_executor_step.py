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


def test_a_step_graph_in_a_job_yaml_runs_with_run_local(tmp_path):
    import yaml

    from p2pcompute.cli.main import main

    model = Model(64, (8,), 10)
    params = init_params(model, np.random.default_rng(3))
    split = data.digits(seed=0)
    feeds = {"x": split.x_train[:16], "y": split.y_train[:16], **params}
    for name, array in feeds.items():
        np.save(tmp_path / f"{name}.npy", array)
    job = {"name": "step", "inputs": {name: f"{name}.npy" for name in feeds},
           "ops": step_graph(model, 16).to_dict(binary=False), "outputs": {"dir": "out"}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "job.yaml"), "--local"]) == 0
    want = step_graph(model, 16).run(feeds)
    got = tensor_format.decode((tmp_path / "out" / "grad.W0.tensor").read_bytes())
    np.testing.assert_allclose(got, want["grad.W0"], rtol=1e-12, atol=1e-15)
