"""job.yaml v1: the schema, the checks it cannot make, every problem with its path."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobspec_helpers import MEAN, cid, graph, pipeline, workspace, write

from p2pcompute.ops import jobfile
from p2pcompute.ops.opset import DTYPE_NAMES
from p2pcompute.ops.tasks import OUTPUT_FORMATS, Limits
from p2pcompute.scheduler import spec
from p2pcompute.scheduler.spec_check import schema, schema_problems


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("ws"))


def problems_of(ws, doc) -> list[str]:
    got, problems = spec.check(doc, ws)
    assert (got is None) == bool(problems)
    return [str(p) for p in problems]


# --- the schema is the one of run --local too ------------------------------------------------------


def test_schema_is_valid_and_agrees_with_run_local():
    import jsonschema
    jsonschema.Draft202012Validator.check_schema(schema())
    props, defs = schema()["properties"], schema()["$defs"]
    assert set(jobfile.TOP_KEYS + jobfile.PLACEMENT_KEYS + jobfile.NETWORK_KEYS) == set(props)
    assert set(defs["limits"]["properties"]) == set(Limits.__dataclass_fields__)
    assert defs["formats"]["additionalProperties"]["enum"] == list(OUTPUT_FORMATS)
    assert defs["input"]["then"]["properties"]["dtype"]["enum"] == list(DTYPE_NAMES)


@pytest.mark.parametrize("example", ["cloud-graph", "cloud-wasm", "ndvi-map", "matmul-split", "cloud-pipeline"])
def test_examples_are_valid(ws, example):
    job, problems = spec.check_file(ws / f"{example}.job.yaml")
    assert problems == [] and job is not None
    if example.startswith("cloud-") and example != "cloud-pipeline":
        jobfile.load(ws / f"{example}.job.yaml")  # and run --local still takes the single-task ones


def test_pipeline_example_is_read_as_two_mapped_stages(ws):
    job = spec.load(ws / "cloud-pipeline.job.yaml")
    detect, masks = job.stages
    assert (detect.name, detect.kind, masks.name, masks.kind) == ("detect", "wasm", "masks", "graph")
    assert len(job.inputs["blue"].sources) == 3 and job.inputs["blue"].collection
    assert masks.when == spec.When("detect", "cloud_fraction", ">", 0.2)
    assert detect.requirements.wasm and masks.requirements.opset == 1
    assert masks.requirements.timeout_s == 300 and masks.limits.wall_seconds == 300


def test_inputs_in_every_form(ws):
    doc = {"inputs": {"f": "a.npy", "g": {"glob": "x/*.npy"}, "c": f"ipfs://{cid()}", "u": "https://example.org/d.npy",
                      "l": [f"ipfs://{cid(1)}", f"ipfs://{cid(2)}", "a.npy"],
                      "k": {"uri": f"kubo-rpc://127.0.0.1:5001/{cid()}"}, "h": "dh" + "a" * 84},
           "program": "builtin:cloud_detect.wat", "map": {"over": ["inputs.g", "inputs.l"]}}
    got, problems = spec.check(doc, ws)
    assert problems == []
    kinds = {n: (tuple(s.kind for s in i.sources), i.collection) for n, i in got.inputs.items()}
    assert kinds == {"f": (("file",), False), "g": (("file",) * 3, True), "c": (("uri",), False),
                     "u": (("uri",), False), "l": (("uri", "uri", "file"), True), "k": (("uri",), False),
                     "h": (("handle",), False)}
    doc["inputs"]["h"] = {"handle": "dhxyz"}
    assert [str(p) for p in spec.check(doc, ws)[1]] == [
        "inputs.h.handle: 'dhxyz' is not a data handle (bad encoding or length)"]
    assert got.inputs["f"].hint.shape == (300, 200)


# --- every problem with its path ------------------------------------------------------------------


def single() -> dict:
    return {"name": "t", "inputs": {"x": "x/*.npy"}, "map": {"over": "inputs.x", "batch": 2}, "ops": graph(MEAN)}


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["stages"][1]["map"].update(batch=-3), "stages[1].map.batch: -3 is less than the minimum of 1"),
    (lambda d: d.update(opps=1), "opps: unknown key; expected one of version, name, inputs"),
    (lambda d: d.update(verification="majority"), "verification: 'majority' is not a verification strategy: write "
                                                  "one of none, replicate(N, agree=K), adaptive(threshold=T, rate=R), "
                                                  "spot-check(RATE), check, tolerance(rtol=R, atol=A)"),
    (lambda d: d.update(verification="replicate(3, agree=4)"), "verification: replicate: agree is between 1 and n (3)"),
    (lambda d: d.update(verification="spot-check(rate=0)"), "verification: spot-check: rate is a share of tasks above 0 "
                                                            "and at most 1 (0.05 checks one in 20); for no checks write none"),
    (lambda d: d["stages"][1]["inputs"].update(m="stages.stat.outputs.m"),
     "stages[1].inputs.m: stages.stat.outputs.m: no stage is named 'stat' (stages: scaled, stats)"),
    (lambda d: d["stages"][1]["inputs"].update(m="stages.stats.outputs.mean"),
     "stages[1].inputs.m: stages.stats.outputs.mean: stage stats has no output 'mean' (its outputs: m)"),
    (lambda d: d["stages"][0].update(when="scaled.y > 1"), "stages[0]: stages form a cycle: stats -> scaled -> stats"),
    (lambda d: d["stages"][1].update(when="scaled.y > 1"), "stages[1]: stages form a cycle: scaled -> scaled"),
    (lambda d: d["stages"][1].update(when="stats.m >> 1"), "stages[1].when: 'stats.m >> 1' is not a condition"),
    (lambda d: d.update(inputs={"x": "nothing/*.npy"}), "inputs.x: glob 'nothing/*.npy' matches no file"),
    (lambda d: d.update(inputs={"x": {"path": "missing.npy"}}), "inputs.x.path: file missing.npy not found"),
    (lambda d: d.update(inputs={"x": "ipfs://notacid"}), "inputs.x: 'ipfs://notacid'"),
    (lambda d: d.update(inputs={"x": {"glob": "x/*.npy", "band": 1, "raw": True}}),
     "inputs.x: `raw: true` and `band` do not go together"),
    (lambda d: d.update(inputs={"x": {"path": "a.npy", "glob": "x/*"}}), "inputs.x: give exactly one of path"),
    (lambda d: d["stages"][1]["map"].update(over="inputs.x"),
     "stages[1].inputs.m: stages.stats.outputs.m is per item (stage stats maps over 3 items): map over it"),
    (lambda d: d["stages"][0].pop("map"), "stages[0].inputs.x: inputs.x is a collection of 3 items: map over it"),
    (lambda d: d["stages"][1].update(ops={**graph(MEAN), "outputs": ["m"]}),
     "stages[1].inputs: the inputs must match the graph's inputs ['x']: missing [], not in the graph ['m']"),
    (lambda d: d["stages"][1]["map"].update(batch=2), "stages[1].when: stage stats maps over 3 items, so its m is "
                                                      "per item: this stage must map over the same 3 items with batch 1"),
    (lambda d: d["stages"].append({"name": "more", "inputs": {"y": "stages.scaled.outputs.y"},
                                   "map": {"over": "stages.scaled.outputs.y"}, "when": "scaled.y > 0.5",
                                   "ops": {**graph(MEAN), "inputs": {"y": {}}, "nodes": [
                                       {"name": "m", "op": "neg", "inputs": ["y"]}]}}),
     "stages[2].when: a condition needs a scalar output, and scaled.y is float32[4, 4]"),
    (lambda d: d["stages"][1].update(map={"over": ["inputs.x", "stages.stats.outputs.m", "inputs.a"]},
                                     inputs={**d["stages"][1]["inputs"], "a": "inputs.a"}),
     "stages[1].map.over: the inputs mapped over together need equal numbers of items: inputs.x has 3, "
     "stages.stats.outputs.m has 3, inputs.a has 1"),
    (lambda d: d["stages"][0].update(name="scaled"), "stages[1].name: stage name 'scaled' is used twice"),
    (lambda d: d["stages"][0].update(args=["-v"]), "stages[0]: `args` is for programs; a graph takes none"),
    (lambda d: d["stages"][0].update(program="p.wat"), "stages[0]: a stage needs exactly one of `ops`, `program`"),
    (lambda d: d["stages"][0].update(resources={"cpus": 0}), "stages[0].resources.cpus: 0 is less than the minimum"),
    (lambda d: d["stages"][0].update(resources={"timeout": "45d"}), "stages[0].resources: timeout_s 3888000.0 out of range"),
    (lambda d: d["stages"][0].update(constraints={"arch": "arm 64"}), "stages[0].constraints.arch: 'arm 64' is not an "
                                                                      "architecture name"),
    (lambda d: d.update(priority=1000), "priority: 1000 is greater than the maximum of 100"),
    (lambda d: d["stages"][1].update(when="stats.mean > 1"),
     "stages[1].when: stats.mean: stage stats has no output 'mean' (its outputs: m)"),
    (lambda d: d["inputs"].update(a={"path": "scene.tif", "band": 7}),
     "inputs.a.band: scene.tif has shape [5, 32, 32]; band 7 needs a 3-D (bands, rows, cols) image"),
    (lambda d: d.update(outputs={"formats": {"y": "png"}}), "outputs.formats: in a pipeline, each stage lists"),
    (lambda d: d.update(map={"over": "inputs.x"}), ": `map` runs the job's `ops` or `program` over its inputs"),
    (lambda d: d["stages"][1].update(outputs={"formats": {"q": "png"}}),
     "stages[1].outputs.formats: ['q'] are not outputs of the graph ['y']"),
])
def test_each_problem_is_reported_with_its_path(ws, change, expected):
    doc = pipeline()
    doc["inputs"]["a"] = "a.npy"
    change(doc)
    problems = problems_of(ws, doc)
    assert any(p.startswith(expected) or expected.startswith(":") and expected[2:] in p for p in problems), problems


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(split={"op": "conv", "tile": 8}), "split.op: 'conv' cannot be split: only matmul can"),
    (lambda d: d.update(inputs={"A": "a.npy", "B": "a.npy"}),
     "split: matmul of float64[300, 200] and float64[300, 200]: a split matmul needs A (m x k) and B (k x n)"),
    (lambda d: d.update(inputs={"A": "a.npy"}), "split: a split matmul reads two inputs (A @ B)"),
    (lambda d: d.update(inputs={"A": "x/*.npy", "B": "b.npy"}), "inputs.A: inputs.A is a collection of 3 items"),
    (lambda d: d["split"].update(inputs=["A", "C"]), "split: split reads 'C', which is not an input of the job"),
    (lambda d: d.update(map={"over": "inputs.A"}), ": `map` runs the job's `ops` or `program` over its inputs"),
])
def test_split_problems(ws, change, expected):
    doc = {"inputs": {"A": "a.npy", "B": "b.npy"}, "split": {"op": "matmul", "tile": 128}}
    assert problems_of(ws, doc) == []
    change(doc)
    problems = problems_of(ws, doc)
    assert any(p.startswith(expected) or expected.startswith(":") and expected[2:] in p for p in problems), problems


def test_all_problems_at_once_with_lines(ws):
    doc = pipeline()
    doc["stages"][1]["map"]["batch"] = -3
    doc["stages"][0]["ops"]["nodes"][0]["op"] = "no_such_op"
    doc["inputs"]["y"] = "missing/*.npy"
    doc["retries"] = "many"
    path = write(ws, doc, "bad.yaml")
    _, problems = spec.check_file(path)
    text = path.read_text().splitlines()
    shown = {p.path: p for p in problems}
    assert set(shown) == {"inputs.y", "retries", "stages[0].ops", "stages[1].map.batch"}, problems
    assert "unknown operator" in shown["stages[0].ops"].message or "no_such_op" in shown["stages[0].ops"].message
    assert text[shown["stages[1].map.batch"].line - 1].strip() == "batch: -3"
    assert text[shown["retries"].line - 1].startswith("retries:")
    with pytest.raises(spec.SpecError, match=r"4 problems in .*bad.yaml:\n  .*bad.yaml:\d+: inputs.y: glob"):
        spec.load(path)


def test_unreadable_and_non_yaml_files(tmp_path):
    assert [p.message for p in spec.check_file(tmp_path / "none.yaml")[1]][0].startswith("cannot read the job file")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    assert spec.check_file(tmp_path / "bad.yaml")[1][0].message.startswith("not valid YAML")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8))
    (tmp_path / "bomb.yaml").write_text(bomb)
    assert "more than 5,000,000 values" in spec.check_file(tmp_path / "bomb.yaml")[1][0].message
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert str(spec.check_file(tmp_path / "list.yaml")[1][0]) == "[1] is not of type 'object'"


def test_run_local_shares_the_schema(ws):
    doc = {"inputs": {"a": "a.npy"}, "ops": {"opset": 1, "inputs": {"a": {}}, "nodes": [
        {"name": "s", "op": "reduce_sum", "inputs": ["a"]}], "outputs": ["s"]},
        "version": 1, "resources": {"memory": "256MiB", "timeout": "2m"}, "retries": 2, "verification": "none"}
    job = jobfile.parse(copy.deepcopy(doc), ws)
    assert job.task.limits.memory == 256 << 20 and job.task.limits.wall_seconds == 120
    assert problems_of(ws, doc) == []
    with pytest.raises(Exception, match=r"job.yaml retries: -1 is less than the minimum of 0"):
        jobfile.parse({**doc, "retries": -1}, ws)
    jobfile.parse({**doc, "verification": "replicate(3, agree=2)"}, ws)
    with pytest.raises(Exception, match=r"job.yaml verification: replicate: agree is between 1 and n \(3\)"):
        jobfile.parse({**doc, "verification": "replicate(3, agree=5)"}, ws)
    with pytest.raises(Exception, match=r"`map` makes a job of many tasks.*p2pcompute validate"):
        jobfile.parse({**doc, "map": {"over": "inputs.a"}}, ws)


# --- hostile input: never an exception, always problems --------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=12),
                     st.sampled_from(["inputs.x", "stages.stats.outputs.m", "x/*.npy", "a.npy", "ipfs://x",
                                      "matmul", "stats.m > 0.5", "builtin:cloud_detect.wat"]))
_keys = st.sampled_from(["name", "inputs", "ops", "program", "map", "split", "stages", "over", "batch", "when",
                         "x", "m", "tile", "op", "glob", "path", "band", "resources", "limits", "memory"])
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
                       max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.dictionaries(_keys, _values, max_size=6))
def test_garbage_gives_problems_never_an_exception(ws, data):
    job, problems = spec.check(data, ws)
    assert job is not None or problems


def _paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield prefix + (k,), v
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield prefix + (i,), v
            yield from _paths(v, prefix + (i,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_valid_pipeline_with_one_value_replaced_never_raises(ws, data):
    doc = pipeline()
    paths = [p for p, _ in _paths(doc)]
    where = data.draw(st.sampled_from(paths))
    node = doc
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = data.draw(_values)
    job, problems = spec.check(doc, ws)
    assert job is not None or problems
    assert all(isinstance(p.message, str) and p.message for p in problems)


def test_problem_json_is_plain(ws):
    doc = pipeline()
    doc["priority"] = "high"
    _, problems = spec.check(doc, ws)
    assert json.loads(json.dumps([p.to_json() for p in problems])) == [
        {"path": "priority", "line": None, "message": "'high' is not of type 'integer'"}]
    assert re.fullmatch(r"priority: .*", str(problems[0]))
    assert yaml.safe_dump(doc)  # the doc itself is still plain data
    assert schema_problems(doc) == problems


@pytest.mark.parametrize("where", ["name", "inputs.x", "stages[0].name"])
def test_a_nul_character_anywhere_is_a_problem_at_its_path_not_an_exception(ws, where):
    doc = pipeline()
    if where == "name":
        doc["name"] = "a\x00b"
    elif where == "inputs.x":
        doc["inputs"]["x"] = "x/\x00.npy"
    else:
        doc["stages"][0]["name"] = "\x00"
    job, problems = spec.check(doc, ws)
    assert job is None
    assert any(p.path == where and "NUL" in p.message for p in problems)
