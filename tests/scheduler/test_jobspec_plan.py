"""plan.py: JobSpec -> JobPlan for map, split matmul and stages; pure, bounded, deterministic."""

from __future__ import annotations

import cbor2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobspec_helpers import MEAN, cid, graph, pipeline, workspace

from p2pcompute.ops.graph import Graph
from p2pcompute.scheduler import model, plan, spec
from p2pcompute.scheduler.model import JobPlan, PlanError
from p2pcompute.scheduler.plan import Resolved, decode_payload, full_payload, plan_job


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("ws"))


def build(ws, doc) -> spec.JobSpec:
    job, problems = spec.check(doc, ws)
    assert problems == [], problems
    return job


def run_locally(p: JobPlan, data: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """Run every planned graph task in order with Graph.run, as peers would; data by (fake) CID."""
    values: dict[tuple[str, str], np.ndarray] = {}
    for t in p.tasks:
        task, items, per_item = decode_payload(full_payload(p, t))
        g = Graph.from_cbor(task.graph)
        feeds = {r.name: data[r.cid] if r.cid else values[(r.task, r.output)] for r in t.inputs}
        for name, value in g.run(feeds).items():
            values[(t.task_id, name)] = value
    return values


def split_doc(tile: int, m: int, k: int, n: int) -> dict:
    return {"inputs": {"A": {"uri": f"ipfs://{cid(1)}", "dtype": "float64", "shape": [m, k]},
                       "B": {"uri": f"ipfs://{cid(2)}", "dtype": "float64", "shape": [k, n]}},
            "split": {"op": "matmul", "tile": tile}}


def split_resolved(a: np.ndarray, b: np.ndarray) -> dict:
    return {"A": [Resolved("cid-a", a.nbytes, a.shape, "float64")], "B": [Resolved("cid-b", b.nbytes, b.shape, "float64")]}


# --- split matmul ---------------------------------------------------------------------------------


def test_split_matmul_recombines_to_numpys_product(ws):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 250))
    p = plan_job(build(ws, split_doc(128, 300, 200, 250)), split_resolved(a, b), "job-1")
    ids = [t.task_id for t in p.tasks]
    # by diagonals: the first tiles share no block (they spread), each later one shares one with them
    assert ids == ["tile/0-0", "tile/1-1", "tile/2-0", "tile/0-1", "tile/1-0", "tile/2-1", "combine"]
    combine = p.tasks[-1]
    assert combine.kind == "combine" and combine.deps == tuple(f"tile/{i}-{j}" for i in range(3) for j in range(2))
    assert p.outputs == (("combine", "product"),)
    assert all(t.kind == "graph" and t.deps == () and {r.cid for r in t.inputs} == {"cid-a", "cid-b"}
               for t in p.tasks[:-1])
    ops = {n.op for n in Graph.from_cbor(decode_payload(p.tasks[0].payload)[0].graph).nodes}
    assert ops == {"slice", "matmul"}
    values = run_locally(p, {"cid-a": a, "cid-b": b})
    assert values[("tile/2-1", "block")].shape == (300 - 256, 250 - 128)
    np.testing.assert_allclose(values[("combine", "product")], a @ b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("m, k, n, tile", [(1, 1, 1, 1), (5, 3, 4, 100), (2, 3, 70, 1), (65, 2, 3, 1)])
def test_split_edge_shapes_and_concat_trees(ws, m, k, n, tile):
    """A tile larger than the matrix, one element per tile, and rows/columns of more than 64 blocks
    (one concat node takes at most 64 inputs)."""
    rng = np.random.default_rng(m * n)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    p = plan_job(build(ws, split_doc(tile, m, k, n)), split_resolved(a, b), "j")
    assert len(p.tasks) == -(-m // tile) * -(-n // tile) + 1
    np.testing.assert_allclose(run_locally(p, {"cid-a": a, "cid-b": b})[("combine", "product")], a @ b, atol=1e-9)


def test_split_limits_are_named(ws):
    job = build(ws, split_doc(1, 40, 2, 40))
    with pytest.raises(PlanError, match=r"40 x 40 = 1,600 tiles; the combine task reads at most 1,024 "
                                        r"\(MAX_INPUTS_PER_TASK\): use a larger tile"):
        plan.count_tasks(job, plan.placeholders(job))
    unknown = build(ws, {"inputs": {"A": f"ipfs://{cid(1)}", "B": f"ipfs://{cid(2)}"},
                         "split": {"op": "matmul", "tile": 8}})
    with pytest.raises(plan.Unresolved, match="split needs the shapes of A and B"):
        plan.count_tasks(unknown, plan.placeholders(unknown))
    with pytest.raises(PlanError, match=r"shapes \[4, 3\] and \[4, 3\]"):
        plan_job(unknown, {"A": [Resolved("a", None, (4, 3))], "B": [Resolved("b", None, (4, 3))]}, "j")


# --- map --------------------------------------------------------------------------------------------


def map_doc(n: int, batch: int) -> dict:
    return {"name": "m", "inputs": {"x": [f"ipfs://{cid(i)}" for i in range(n)], "w": f"ipfs://{cid(-1)}"},
            "map": {"over": "inputs.x", "batch": batch},
            "ops": {"opset": 1, "inputs": {"x": {}, "w": {}}, "nodes": [
                {"name": "y", "op": "mul", "inputs": ["x", "w"]}], "outputs": ["y"]}}


def map_resolved(n: int) -> dict:
    return {"x": [Resolved(f"c{i}", 10 + i) for i in range(n)], "w": [Resolved("cw", 5)]}


def test_map_tasks_ids_payloads_and_outputs(ws):
    job = build(ws, map_doc(25, 10))
    p = plan_job(job, map_resolved(25), "job-2")
    assert [t.task_id for t in p.tasks] == ["map/00000", "map/00001", "map/00002"]
    first = p.tasks[0]
    assert [r.name for r in first.inputs][:2] == ["x/00000", "x/00001"] and first.inputs[-1].name == "w"
    assert first.inputs[0].cid == "c0" and first.inputs[0].size == 10 and first.inputs[-1].cid == "cw"
    assert p.templates[0][0] == "main" and len(p.tasks[2].payload) < 100  # the graph is stored once
    task, items, per_item = decode_payload(full_payload(p, p.tasks[2]))
    assert items == [f"{j:05d}" for j in range(20, 25)] and per_item == ["x"] and set(task.inputs) == {"x", "w"}
    assert len(p.outputs) == 25 and p.outputs[24] == ("map/00002", "y/00024")
    assert p.retry.retries == 3 and p.verification == "none"
    assert JobPlan.from_wire(p.to_wire()) == p  # a peer receiving it accepts it as it is


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 300), batch=st.integers(1, 400))
def test_map_covers_every_input_exactly_once(ws, n, batch):
    job = build(ws, map_doc(n, batch))
    p = plan_job(job, map_resolved(n), "j")
    p.check()
    assert len(p.tasks) == -(-n // batch) == plan.count_tasks(job, map_resolved(n))
    covered = [r.cid for t in p.tasks for r in t.inputs if r.name.startswith("x/")]
    assert sorted(covered, key=lambda c: int(c[1:])) == [f"c{i}" for i in range(n)]
    assert all(len(decode_payload(full_payload(p, t))[1]) <= batch for t in p.tasks)
    assert plan_job(job, map_resolved(n), "j") == p   # deterministic


def test_map_past_the_task_limit_is_refused_with_the_limit_named():
    n = model.MAX_TASKS_PER_JOB + 1
    job = spec.JobSpec("big", {"x": spec.InputSpec("x", tuple(spec.Source("uri", f"ipfs://{i}") for i in range(n)),
                                                   collection=True)},
                       (spec.StageSpec("main", "graph", "", inputs=(spec.StageInput("x", spec.Ref("input", "x")),),
                                       graph=Graph.from_dict(graph(MEAN)), outputs=("m",),
                                       over=(spec.Ref("input", "x"),), batch=1),), True, output_dir=None)
    resolved = {"x": [Resolved(f"c{i}") for i in range(n)]}
    with pytest.raises(PlanError, match=r"100,001 tasks; a job may have at most 100,000 \(MAX_TASKS_PER_JOB\)"):
        plan_job(job, resolved, "j")
    job2 = spec.JobSpec(job.name, job.inputs, (spec.StageSpec(**{**job.stages[0].__dict__, "batch": 2000}),), True, None)
    with pytest.raises(PlanError, match=r"batch 2000 reads 2,000 inputs; at most 1,024 \(MAX_INPUTS_PER_TASK\)"):
        plan_job(job2, resolved, "j")
    job3 = spec.JobSpec(job.name, job.inputs, (spec.StageSpec(**{**job.stages[0].__dict__, "batch": 2}),), True, None)
    assert len(plan_job(job3, resolved, "j").tasks) == 50_001


def test_unresolved_inputs_and_local_programs_are_refused(ws):
    job = build(ws, map_doc(3, 1))
    with pytest.raises(PlanError, match="input w was not resolved"):
        plan_job(job, {"x": map_resolved(3)["x"]}, "j")
    with pytest.raises(PlanError, match="input w is one item but was resolved to 2"):
        plan_job(job, {**map_resolved(3), "w": [Resolved("a"), Resolved("b")]}, "j")
    (ws / "p.wat").write_text("(module)")
    prog = build(ws, {"inputs": {"a": "a.npy"}, "program": "p.wat", "args": ["-v"]})
    with pytest.raises(PlanError, match=r"program .*p.wat is a local file: add it and pass its ipfs:// CID"):
        plan_job(prog, {"a": [Resolved("ca")]}, "j")
    p = plan_job(prog, {"a": [Resolved("ca")]}, "j", programs={str(ws / "p.wat"): f"ipfs://{cid(9)}"})
    task, _, _ = decode_payload(full_payload(p, p.tasks[0]))
    assert [t.task_id for t in p.tasks] == ["main"] and task.program == f"ipfs://{cid(9)}" and task.args == ("-v",)
    assert p.tasks[0].kind == "wasm" and p.tasks[0].requirements.wasm


# --- stages -----------------------------------------------------------------------------------------


def test_pipeline_conditions_per_item_and_deps_on_the_producing_task(ws):
    job = build(ws, pipeline())
    resolved = {"x": [Resolved(f"x{i}") for i in range(3)]}
    p = plan_job(job, resolved, "j")
    assert [t.task_id for t in p.tasks] == ["stats/00000", "stats/00001", "stats/00002",
                                             "scaled/00000", "scaled/00001", "scaled/00002"]
    t = p.tasks[4]
    assert t.deps == ("stats/00001",) and t.stage == "scaled"
    assert t.condition == model.Condition("stats/00001", "m/00001", ">", 0.5)
    assert [(r.name, r.cid, r.task, r.output) for r in t.inputs] == [
        ("x/00001", "x1", None, None), ("m/00001", None, "stats/00001", "m/00001")]
    assert p.outputs == tuple((f"scaled/{i:05d}", f"y/{i:05d}") for i in range(3))
    # item i's condition holds on what stats/i would report
    assert t.condition.holds({"m/00001": 1.0}) and not t.condition.holds({"m/00001": 0.25})


def test_a_batched_producer_feeds_items_from_its_batch_task(ws):
    doc = pipeline()
    doc["stages"][0]["map"]["batch"] = 2
    del doc["stages"][1]["when"]
    p = plan_job(build(ws, doc), {"x": [Resolved(f"x{i}") for i in range(3)]}, "j")
    deps = {t.task_id: t.deps for t in p.tasks}
    assert deps["scaled/00000"] == deps["scaled/00001"] == ("stats/00000",) and deps["scaled/00002"] == ("stats/00001",)


def test_stages_listed_out_of_order_are_planned_producers_first_and_a_global_condition(ws):
    doc = {"inputs": {"a": "a.npy", "x": "x/*.npy"}, "stages": [
        {"name": "per", "inputs": {"x": "inputs.x", "m": "stages.total.outputs.m"}, "map": {"over": "inputs.x"},
         "when": "total.m >= 0", "ops": graph({**graph(MEAN), "inputs": {"x": {}, "m": {}},
                                               "nodes": [{"name": "m32", "op": "cast", "inputs": ["m"],
                                                          "dtype": "float32"},
                                                         {"name": "y", "op": "mul", "inputs": ["x", "m32"]}],
                                               "outputs": ["y"]})},
        {"name": "total", "inputs": {"x": "inputs.a"}, "ops": graph(MEAN)}]}
    job = build(ws, doc)
    assert [s.name for s in job.stages] == ["total", "per"]
    p = plan_job(job, {"a": [Resolved("ca")], "x": [Resolved(f"x{i}") for i in range(3)]}, "j")
    assert [t.task_id for t in p.tasks] == ["total", "per/00000", "per/00001", "per/00002"]
    assert all(t.condition == model.Condition("total", "m", ">=", 0.0) and t.deps == ("total",) for t in p.tasks[1:])
    assert p.outputs == tuple((f"per/{i:05d}", f"y/{i:05d}") for i in range(3))


def test_a_stage_reading_a_split_reads_the_combine_task(ws):
    doc = {"inputs": {"A": "a.npy", "B": "b.npy"}, "stages": [
        {"name": "mm", "inputs": {"A": "inputs.A", "B": "inputs.B"}, "split": {"op": "matmul", "tile": 128}},
        {"name": "total", "inputs": {"x": "stages.mm.outputs.product"}, "ops": graph(MEAN)}]}
    p = plan_job(build(ws, doc), {"A": [Resolved("a", None, (300, 200))], "B": [Resolved("b", None, (200, 250))]}, "j")
    assert [t.task_id for t in p.tasks][-2:] == ["mm/combine", "total"] and p.tasks[0].task_id == "mm/tile/0-0"
    assert p.tasks[-1].deps == ("mm/combine",) and p.outputs == (("total", "m"),)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), b1=st.integers(1, 8), b2=st.integers(1, 8), cond=st.booleans())
def test_every_pipeline_plan_checks_and_deps_point_backwards(ws, n, b1, b2, cond):
    doc = {"inputs": {"x": [f"ipfs://{cid(i)}" for i in range(n)]}, "stages": pipeline()["stages"]}
    doc["stages"][0]["map"]["batch"] = b1
    if cond:
        b2 = 1
    else:
        del doc["stages"][1]["when"]
    doc["stages"][1]["map"]["batch"] = b2
    p = plan_job(build(ws, doc), {"x": [Resolved(f"x{i}") for i in range(n)]}, "j")
    p.check()
    position = {t.task_id: i for i, t in enumerate(p.tasks)}
    for i, t in enumerate(p.tasks):
        assert all(position[d] < i for d in t.deps)
        assert {r.task for r in t.inputs if r.task} <= set(t.deps)
    assert len(p.tasks) == -(-n // b1) + -(-n // b2)
    assert sorted(r.name for t in p.tasks if t.stage == "scaled" for r in t.inputs if r.cid) == \
        sorted(f"x/{i:05d}" for i in range(n))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.builds(
    lambda d: cbor2.dumps(d),
    st.dictionaries(st.sampled_from(["kind", "inputs", "items", "per_item", "graph", "limits", "outputs"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5),
                              st.lists(st.text(max_size=3), max_size=3),
                              st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)), max_size=5))))
def test_a_hostile_payload_is_a_plan_error(payload):
    try:
        task, items, per_item = decode_payload(payload)
    except PlanError:
        return
    assert task.kind in ("graph", "wasm") and set(per_item) <= set(task.inputs)


def test_planned_payloads_decode(ws):
    p = plan_job(build(ws, map_doc(3, 2)), map_resolved(3), "j")
    task, items, per_item = decode_payload(full_payload(p, p.tasks[0]))
    assert (task.kind, items, per_item) == ("graph", ["00000", "00001"], ["x"])
    with pytest.raises(PlanError, match="not a task"):
        decode_payload(p.tasks[0].payload)  # a template reference alone is not a task
    with pytest.raises(PlanError, match="names template 'main', not in the plan"):
        full_payload(JobPlan(p.job_id, p.name, p.tasks, outputs=p.outputs), p.tasks[0])
    with pytest.raises(PlanError, match="not valid CBOR"):
        decode_payload(b"\xff\x00")
    with pytest.raises(PlanError, match="per_item must name inputs"):
        decode_payload(cbor2.dumps({**cbor2.loads(full_payload(p, p.tasks[0])), "per_item": ["q"]}))


def test_a_mapped_task_runs_in_the_executor_item_by_item(ws):
    """The ndvi-map example: its planned task bound per item to the local scene files, run by the
    real executor, gives each scene's mean NDVI."""
    from p2pcompute.ops.executor import run_tasks
    from p2pcompute.ops.scene import make_scene

    job = spec.load(ws / "ndvi-map.job.yaml")
    files = [s.text for s in job.inputs["nir"].sources]
    resolved = {n: [Resolved(f"{n}-{i}") for i in range(len(files))] for n in ("nir", "red")}
    p = plan_job(job, resolved, "j")
    [t] = p.tasks
    task, items, per_item = decode_payload(full_payload(p, t))
    assert items == ["00000", "00001", "00002"] and per_item == ["nir", "red"]
    local = {r.name: files[int(r.cid.split("-")[1])] for r in t.inputs}    # as fetched by CID
    bound = [plan.bind_item(task, label, per_item, local) for label in items]
    results = run_tasks([(b, ws / "out" / label) for b, label in zip(bound, items)], cpus=1)
    assert [r.status for r in results] == ["ok"] * 3
    for i, r in enumerate(results):
        scene = make_scene(32, seed=i).astype(np.float32)
        nir, red = scene[3], scene[2]
        want = ((nir - red) / (nir + red)).mean()
        assert r.outputs["mean_ndvi"]["value"] == pytest.approx(float(want), rel=1e-5)
    assert ("map/00000", plan.item_output("mean_ndvi", items[2])) in p.outputs
    with pytest.raises(PlanError, match="input nir/00009 has no local file"):
        plan.bind_item(task, "00009", per_item, local)


def test_stage_inputs_from_a_band_and_of_their_own(ws):
    doc = {"inputs": {"scenes": "scenes/*.tif"}, "stages": [
        {"name": "ndvi", "inputs": {"nir": {"from": "inputs.scenes", "band": 3}, "red": {"from": "inputs.scenes", "band": 2},
                                     "w": "a.npy"},
         "map": {"over": "inputs.scenes"},
         "ops": {"opset": 1, "inputs": {"nir": {}, "red": {}, "w": {}}, "nodes": [
             {"name": "n", "op": "normalized_difference", "inputs": ["nir", "red"]},
             {"name": "m", "op": "reduce_mean", "inputs": ["n"]}], "outputs": ["m"]}}]}
    job = build(ws, doc)
    assert set(job.inputs) == {"scenes", "ndvi.w"} and not job.inputs["ndvi.w"].collection
    resolved = {"scenes": [Resolved(f"s{i}") for i in range(3)], "ndvi.w": [Resolved("w")]}
    p = plan_job(job, resolved, "j")
    t = p.tasks[1]
    assert [(r.name, r.cid) for r in t.inputs] == [("nir/00001", "s1"), ("red/00001", "s1"), ("w", "w")]
    task, items, per_item = decode_payload(full_payload(p, t))
    assert (task.inputs["nir"].band, task.inputs["red"].band, task.inputs["w"].band) == (3, 2, None)
    assert per_item == ["nir", "red"] and items == ["00001"]
    doc["inputs"]["ndvi.w"] = "b.npy"
    assert [str(x) for x in spec.check(doc, ws)[1]] == ["stages[0].inputs.w: the job already has an input named ndvi.w"]
    doc["inputs"] = {"scenes": {"from": "inputs.x"}}
    assert [str(x) for x in spec.check(doc, ws)[1]][0] == \
        "inputs.scenes.from: `from` is for stage inputs; a job input names its data itself"


def test_what_submit_adds_and_how_it_resolves(ws):
    (ws / "p.wat").write_text("(module)")
    doc = {"inputs": {"x": "x/*.npy", "a": "a.npy", "c": f"ipfs://{cid(3)}"}, "stages": [
        {"name": "s1", "inputs": {"x": "inputs.x"}, "map": {"over": "inputs.x"}, "ops": graph(MEAN)},
        {"name": "s2", "inputs": {"a": "inputs.a", "c": "inputs.c", "again": "x/x0.npy"}, "program": "p.wat"}]}
    job = build(ws, doc)
    assert job.local_files() == [str(ws / "x" / f"x{i}.npy") for i in range(3)] + [str(ws / "a.npy"), str(ws / "p.wat")]
    seen = []

    def resolve(src, hint):
        seen.append(src.kind)
        return Resolved(f"cid:{src.text}", 1, hint.shape if hint else None)

    resolved = plan.resolution(job, resolve)
    assert resolved["x"][2].cid == f"cid:{ws / 'x' / 'x2.npy'}" and resolved["a"][0].shape == (300, 200)
    assert resolved["c"][0].cid == f"cid:ipfs://{cid(3)}" and seen.count("uri") == 1
    p = plan_job(job, resolved, "j", programs={str(ws / "p.wat"): f"ipfs://{cid(4)}"})
    assert [t.task_id for t in p.tasks] == ["s1/00000", "s1/00001", "s1/00002", "s2"]
