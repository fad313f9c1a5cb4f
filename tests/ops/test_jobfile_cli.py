"""job.yaml checking and the `run --local` / `ops` commands."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import yaml

from p2pcompute.cli.main import main
from p2pcompute.errors import UserError
from p2pcompute.ops import jobfile, tensor_format

GRAPH = {"opset": 1, "inputs": {"a": {}, "b": {}},
         "nodes": [{"name": "p", "op": "matmul", "inputs": ["a", "b"]},
                   {"name": "s", "op": "reduce_sum", "inputs": ["p"], "axes": [1]}],
         "outputs": ["s"]}


@pytest.fixture
def workdir(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.float64).reshape(2, 3))
    tensor_format.write_file(tmp_path / "b.tensor", np.ones((3, 4)))
    return tmp_path


def write(workdir, doc) -> str:
    path = workdir / "job.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def good_job() -> dict:
    return {"name": "demo", "inputs": {"a": "a.npy", "b": {"path": "b.tensor"}}, "ops": copy.deepcopy(GRAPH),
            "outputs": {"dir": "out", "formats": {"s": "npy"}},
            "limits": {"memory": "512MiB", "cpu_seconds": 10, "wall_seconds": 20}}


def test_run_local_writes_outputs_and_reports_json(workdir, capsys):
    assert main(["run", write(workdir, good_job()), "--local", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    want = (np.arange(6.0).reshape(2, 3) @ np.ones((3, 4))).sum(axis=1)
    assert report["status"] == "ok" and report["outputs"]["s"]["value"] == want.tolist()
    assert np.load(workdir / "out" / "s.npy").tobytes() == want.tobytes()


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(opps=1), r"unknown key\(s\) \['opps'\]"),
    (lambda d: d.update(program="x.wat"), "exactly one of `ops`"),
    (lambda d: d.pop("ops"), "exactly one of `ops`"),
    (lambda d: d["inputs"].update(c="c.npy"), "file c.npy not found"),
    (lambda d: d["inputs"].pop("b"), r"must match the graph's inputs \['a', 'b'\]: missing \['b'\]"),
    (lambda d: d["inputs"].update(b={"path": "b.tensor", "band": 1}),
     r"inputs.b.band: b.tensor has shape \[3, 4\]"),
    (lambda d: d["limits"].update(memory="lots"), r"limits.memory: 'lots' is not a size"),
    (lambda d: d["limits"].update(cpu_seconds=-1), "limits.cpu_seconds: -1 is not a positive number"),
    (lambda d: d["limits"].update(gpu=1), r"limits: unknown key\(s\) \['gpu'\]"),
    (lambda d: d["outputs"]["formats"].update(s="jpeg"), "outputs.formats: map output names"),
    (lambda d: d["outputs"]["formats"].update(t="png"), r"\['t'\] are not graph outputs"),
    (lambda d: d["ops"]["nodes"][0].update(op="matmull"), "job.yaml ops: unknown operator 'matmull'"),
    (lambda d: d.update(args=["x"]), "`args` is for programs"),
])
def test_job_errors_are_clear(workdir, change, expected):
    doc = good_job()
    change(doc)
    with pytest.raises(UserError, match=expected):
        jobfile.load(write(workdir, doc))


def test_shape_errors_are_caught_from_file_headers_before_any_worker(workdir, capsys):
    np.save(workdir / "a.npy", np.ones((2, 5)))
    assert main(["run", write(workdir, good_job()), "--local"]) == 1
    err = capsys.readouterr().err
    assert "node 'p': matmul(float64[2, 5], float64[3, 4])" in " ".join(err.split())


def test_resource_exceeded_exit_code_and_message(workdir, capsys):
    doc = good_job()
    doc["limits"]["output_bytes"] = 10
    assert main(["run", write(workdir, doc), "--local"]) == 1
    assert "output_size limit exceeded" in capsys.readouterr().out


def test_run_needs_local_and_bad_yaml_is_reported(workdir, capsys):
    assert main(["run", write(workdir, good_job())]) == 1
    assert "add --local" in capsys.readouterr().err
    (workdir / "bad.yaml").write_text("inputs: [unclosed")
    assert main(["run", str(workdir / "bad.yaml"), "--local"]) == 1
    assert "is not valid YAML" in capsys.readouterr().err
    assert main(["run", str(workdir / "missing.yaml"), "--local"]) == 1
    assert "cannot read job file" in capsys.readouterr().err


def test_ops_list_and_scene(tmp_path, capsys):
    assert main(["ops", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {op["name"] for op in listing["operators"]}
    assert listing["opset"] == 2 and listing["supported_opsets"] == [1, 2]
    assert {"matmul", "normalized_difference", "reduce_max", "softmax_cross_entropy"} <= names
    assert {op["name"]: op["since"] for op in listing["operators"]}["relu_grad"] == 2
    assert main(["ops", "list", "--category", "reduction"]) == 0
    assert "reduce_mean" in capsys.readouterr().out
    assert main(["ops", "list", "--category", "nope"]) == 1
    assert main(["ops", "scene", str(tmp_path / "s.tif"), "--size", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [5, 64, 64]


def test_every_option_has_help(capsys):
    for argv in (["run", "--help"], ["ops", "list", "--help"], ["ops", "scene", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "--json" in text and "machine-readable" in text
