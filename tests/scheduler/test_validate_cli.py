"""`p2pcompute validate JOB.yaml`: exit status, one line per problem with file:line: path: message, --json."""

from __future__ import annotations

import json

import pytest
from jobspec_helpers import pipeline, workspace, write

from p2pcompute.cli.main import main


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("ws"))


def test_valid_file_prints_a_one_line_summary(ws, capsys):
    assert main(["validate", str(ws / "cloud-pipeline.job.yaml")]) == 0
    assert capsys.readouterr().out.strip() == "ok: 2 stages, 6 tasks"
    assert main(["validate", str(ws / "matmul-split.job.yaml")]) == 0
    assert capsys.readouterr().out.strip() == "ok: 1 stage, 2 tasks"


def test_thousands_are_grouped(ws, capsys):
    doc = {"inputs": {"x": [f"https://example.org/{i}.npy" for i in range(1024)]}, "map": {"over": "inputs.x"},
           "program": "builtin:cloud_detect.wat"}
    assert main(["validate", str(write(ws, doc, "many.yaml"))]) == 0
    assert capsys.readouterr().out.strip() == "ok: 1 stage, 1,024 tasks"


def test_every_problem_with_line_and_path_and_exit_status_1(ws, capsys):
    doc = pipeline()
    doc["stages"][1]["map"]["batch"] = -3
    doc["verification"] = "majority"
    path = write(ws, doc, "bad.yaml")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    lines = path.read_text().splitlines()
    batch = next(i for i, line in enumerate(lines) if "batch: -3" in line) + 1
    assert f"{path}:{batch}: stages[1].map.batch: -3 is less than the minimum of 1" in out
    assert any(o.startswith(f"{path}:") and "verification: 'majority' is not a verification strategy" in o for o in out)
    assert out[-1] == f"2 problems in {path}"


def test_json_report(ws, capsys):
    doc = pipeline()
    doc["stages"][0]["name"] = "first"
    path = write(ws, doc, "ref.yaml")
    assert main(["validate", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["tasks"] is None
    assert [(p["path"], p["message"]) for p in report["problems"]] == [
        ("stages[1].inputs.m", "stages.stats.outputs.m: no stage is named 'stats' (stages: first, scaled)"),
        ("stages[1].map.over", "stages.stats.outputs.m: no stage is named 'stats' (stages: first, scaled)"),
        ("stages[1].when", "stats.m: no stage is named 'stats' (stages: first, scaled)")]
    assert all(isinstance(p["line"], int) for p in report["problems"])
    assert main(["--json", "validate", str(ws / "ndvi-map.job.yaml")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["stages"], report["tasks"], report["name"]) == (True, 1, 1, "ndvi-map")


def test_tasks_unknown_until_submit_and_missing_file(ws, capsys, tmp_path):
    doc = {"inputs": {"A": "ipfs://bafkqaaa", "B": "ipfs://bafkqaaa"}, "split": {"op": "matmul", "tile": 64}}
    assert main(["validate", str(write(ws, doc, "unknown.yaml"))]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 stage, tasks known at submit (stage main: split needs the shapes")
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml: (file): cannot read the job file" in capsys.readouterr().out


def test_a_plan_past_the_limits_is_a_problem(ws, capsys):
    doc = {"inputs": {"A": {"uri": "ipfs://bafkqaaa", "shape": [4096, 8], "dtype": "float64"},
                      "B": {"uri": "ipfs://bafkqaaa", "shape": [8, 4096], "dtype": "float64"}},
           "split": {"op": "matmul", "tile": 64}}
    assert main(["validate", str(write(ws, doc, "big.yaml"))]) == 1
    assert "64 x 64 = 4,096 tiles; the combine task reads at most 1,024" in capsys.readouterr().out
