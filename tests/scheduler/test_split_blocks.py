"""A split matmul whose tiles read only their blocks: plan.py's cuts and blocks, blocks.py's cutting. Pure
(files on disk, no network): each tile's inputs are exactly its row block of A and column block of B, the
block and tile counts hold for sizes that do not divide, and the combine of the tiles is numpy's A @ B."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobspec_helpers import cid

from p2pcompute.errors import UserError
from p2pcompute.ops import tensor_format
from p2pcompute.ops.graph import Graph
from p2pcompute.scheduler import spec
from p2pcompute.scheduler.blocks import cut_file, local_cuts, remote_cuts, whole_inputs
from p2pcompute.scheduler.model import PlanError
from p2pcompute.scheduler.plan import (Cut, Resolved, block_bounds, decode_payload, diagonals, plan_job,
                                       split_cuts)


def job(tmp_path, doc: dict) -> spec.JobSpec:
    got, problems = spec.check(doc, tmp_path)
    assert problems == [], problems
    return got


def write(tmp_path, name: str, array: np.ndarray) -> None:
    if name.endswith(".tensor"):
        tensor_format.write_file(tmp_path / name, array)
    else:
        np.save(tmp_path / name, array)


def decode(data: bytes) -> np.ndarray:
    return tensor_format.decode(data) if data.startswith(tensor_format.MAGIC) else np.load(io.BytesIO(data))


def cut_all(j: spec.JobSpec) -> tuple[dict[Cut, list[Resolved]], dict[str, np.ndarray]]:
    """What submit does, with fake CIDs: every local cut made; CID -> block array."""
    blocks, data = {}, {}
    for c in local_cuts(j, split_cuts(j)):
        blocks[c] = []
        for n, raw in enumerate(cut_file(j.inputs[c.input].sources[0].text, c)):
            cid = f"{c.input}-{c.axis}-{n}"
            data[cid] = decode(raw)
            blocks[c].append(Resolved(cid, len(raw)))
    return blocks, data


def resolved(j: spec.JobSpec) -> dict[str, list[Resolved]]:
    return {name: [Resolved("", None, i.hint.shape, i.hint.dtype.name)] for name, i in j.inputs.items()}


def run(p, data: dict[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    values: dict[tuple[str, str], np.ndarray] = {}
    for t in p.tasks:
        graph = Graph.from_cbor(decode_payload(t.payload)[0].graph)
        feeds = {r.name: data[r.cid] if r.cid else values[(r.task, r.output)] for r in t.inputs}
        for name, value in graph.run(feeds).items():
            values[(t.task_id, name)] = value
    return values


@pytest.mark.parametrize("m, k, n, tile, a_file, b_file", [
    (300, 200, 250, 128, "a.npy", "b.npy"),        # 3 x 2 tiles, the last row and column shorter
    (65, 7, 130, 64, "a.tensor", "b.npy"),          # 2 x 3 tiles, a row block of one row
    (5, 3, 4, 100, "a.npy", "b.tensor"),            # a tile larger than the matrix: one block each
])
def test_each_tile_reads_exactly_its_row_and_column_block_and_the_combine_is_numpys_product(
        tmp_path, m, k, n, tile, a_file, b_file):
    rng = np.random.default_rng(m * n)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    write(tmp_path, a_file, a)
    write(tmp_path, b_file, b)
    j = job(tmp_path, {"inputs": {"A": a_file, "B": b_file}, "split": {"op": "matmul", "tile": tile}})
    assert split_cuts(j) == [Cut("A", 0, tile), Cut("B", 1, tile)]
    blocks, data = cut_all(j)
    rows, cols = math.ceil(m / tile), math.ceil(n / tile)
    assert len(blocks[Cut("A", 0, tile)]) == rows and len(blocks[Cut("B", 1, tile)]) == cols
    for (start, end), r in zip(block_bounds(m, tile), blocks[Cut("A", 0, tile)]):
        np.testing.assert_array_equal(data[r.cid], a[start:end])                     # row block: all k columns
    for (start, end), r in zip(block_bounds(n, tile), blocks[Cut("B", 1, tile)]):
        np.testing.assert_array_equal(data[r.cid], b[:, start:end])                  # column block: all k rows
    # the blocks keep the input's own format
    first = next(cut_file(str(tmp_path / a_file), Cut("A", 0, tile)))
    assert first.startswith(tensor_format.MAGIC if a_file.endswith(".tensor") else b"\x93NUMPY")

    p = plan_job(j, resolved(j), "j", blocks=blocks)
    tiles = [t for t in p.tasks if t.kind == "graph"]
    assert len(tiles) == rows * cols and len(p.tasks) == rows * cols + 1
    for t in tiles:
        i, jj = map(int, t.task_id.removeprefix("tile/").split("-"))
        assert {(r.name, r.cid) for r in t.inputs} == {("A", f"A-0-{i}"), ("B", f"B-1-{jj}")}
        assert [r.size for r in t.inputs] == [blocks[Cut("A", 0, tile)][i].size, blocks[Cut("B", 1, tile)][jj].size]
        ops = [node.op for node in Graph.from_cbor(decode_payload(t.payload)[0].graph).nodes]
        assert ops == ["matmul"]                                                       # nothing to slice
    np.testing.assert_allclose(run(p, data)[("combine", "product")], a @ b, rtol=0, atol=1e-9)


def test_blocks_of_the_wrong_count_are_refused_and_an_uncut_side_slices_itself(tmp_path):
    write(tmp_path, "a.npy", np.ones((10, 4)))
    write(tmp_path, "b.npy", np.ones((4, 6)))
    j = job(tmp_path, {"inputs": {"A": "a.npy", "B": "b.npy"}, "split": {"op": "matmul", "tile": 4}})
    blocks, data = cut_all(j)
    short = {**blocks, Cut("A", 0, 4): blocks[Cut("A", 0, 4)][:2]}
    with pytest.raises(PlanError, match="input A cut in 2 blocks; its tiles need 3"):
        plan_job(j, resolved(j), "j", blocks=short)
    # only B cut: the tiles read all of A (its CID) and slice their rows; B's block as it is
    res = {"A": [Resolved("cid-a", 320, (10, 4), "float64")], "B": resolved(j)["B"]}
    p = plan_job(j, res, "j", blocks={Cut("B", 1, 4): blocks[Cut("B", 1, 4)]})
    t = next(t for t in p.tasks if t.task_id == "tile/2-1")
    assert {(r.name, r.cid) for r in t.inputs} == {("A", "cid-a"), ("B", "B-1-1")}
    graph = Graph.from_cbor(decode_payload(t.payload)[0].graph)
    assert [(node.op, node.inputs) for node in graph.nodes] == [("slice", ("A",)), ("matmul", ("a_rows", "B"))]
    got = run(p, {**data, "cid-a": np.ones((10, 4))})[("combine", "product")]
    np.testing.assert_allclose(got, np.ones((10, 4)) @ np.ones((4, 6)), atol=1e-9)


def test_what_is_cut_and_what_is_still_added_whole(tmp_path):
    write(tmp_path, "a.npy", np.ones((8, 8)))
    write(tmp_path, "b.npy", np.ones((8, 8)))
    total = {"opset": 1, "inputs": {"A": {}}, "nodes": [{"name": "s", "op": "reduce_sum", "inputs": ["A"]}],
             "outputs": ["s"]}
    j = job(tmp_path, {
        "inputs": {"A": "a.npy", "B": "b.npy", "C": f"ipfs://{cid(3)}"},
        "stages": [{"name": "mm", "inputs": {"A": "inputs.A", "B": "inputs.B"}, "split": {"op": "matmul", "tile": 3}},
                   {"name": "mm2", "inputs": {"B": "inputs.B", "C": "inputs.C"},
                    "split": {"op": "matmul", "tile": 5, "inputs": ["B", "C"]}},
                   {"name": "sum", "inputs": {"A": "inputs.A"}, "ops": total}]})
    cuts = split_cuts(j)
    assert cuts == [Cut("A", 0, 3), Cut("B", 1, 3), Cut("B", 0, 5), Cut("C", 1, 5)]
    assert local_cuts(j, cuts) == cuts[:3]                   # an ipfs:// input is not cut here
    assert remote_cuts(j, cuts) == cuts[3:]                  # but fetched and cut by submit
    assert whole_inputs(j) == {"A"}                          # the graph stage reads all of A


def test_a_3d_input_is_refused_with_its_name(tmp_path):
    write(tmp_path, "a.npy", np.ones((2, 2, 2)))
    with pytest.raises(UserError, match="input A is 3-D"):
        list(cut_file(str(tmp_path / "a.npy"), Cut("A", 0, 1)))


@given(st.integers(0, 500), st.integers(1, 200))
def test_block_bounds_cover_the_length_in_order(length, tile):
    bounds = block_bounds(length, tile)
    assert len(bounds) == max(1, math.ceil(length / tile))
    assert bounds[0][0] == 0 and bounds[-1][1] == length
    assert all(e0 == s1 for (_, e0), (s1, _) in zip(bounds, bounds[1:]))
    assert all(0 <= e - s <= tile for s, e in bounds) and all(e - s == tile for s, e in bounds[:-1])


@given(st.integers(1, 40), st.integers(1, 40))
def test_diagonals_list_every_tile_once_and_the_first_share_no_block(rows, cols):
    order = diagonals(rows, cols)
    assert sorted(order) == [(i, j) for i in range(rows) for j in range(cols)]
    first = order[:min(rows, cols)]
    assert len({i for i, _ in first}) == len(first) == len({j for _, j in first})
