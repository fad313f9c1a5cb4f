"""A split matmul over real libp2p: four in-process peers (storage, bitswap, membership, compute, scheduler).

A 256 x 256 float64 A @ B in tiles of 64 is submitted to peer A: submit cuts A into 4 row blocks and B
into 4 column blocks, each added as a CID of its own (the whole files are not added); the 16 tiles run
across the peers, each granted exactly its two blocks; the combine's output on peer A equals numpy's
product within 1e-9. Waits are on conditions with generous deadlines, never fixed sleeps.
"""

from __future__ import annotations

import io
import json

import numpy as np
import trio
from test_service_net import start_peers

from p2pcompute.ops import tensor_format
from p2pcompute.scheduler import service
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.exporter import read_file
from p2pcompute.storage.importer import import_path

JOB = """
name: mm
inputs: {A: a.npy, B: b.npy}
split: {op: matmul, tile: 64}
"""


async def test_a_split_matmul_runs_across_four_peers_each_tile_reading_only_its_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(service, "NOTE_INPUTS_FROM", 1)      # its blocks of 128 KiB count as large
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path, n=4)
        svc = nodes[0].services["scheduler"]
        status, _, body = await svc._api_submit(json.dumps({"job": JOB, "base": str(tmp_path)}).encode(), {})
        assert status == 200, body
        answer = json.loads(body)
        assert answer["tasks"] == 16 + 1
        with trio.fail_after(180):
            report = await svc.wait(answer["job_id"])
        assert report.kind == "done", report.reason

        js = svc.jobs[answer["job_id"]].js
        store = nodes[0].services["storage"].blockstore
        whole = {str(import_path(tmp_path / f, None).cid) for f in ("a.npy", "b.npy")}   # CIDs, nothing stored
        assert not any(Cid.parse(c) in store.pins for c in whole)                       # not added whole
        for task_id, t in js.tasks.items():
            if task_id == "combine":
                continue
            i, j = map(int, task_id.removeprefix("tile/").split("-"))
            got = {r.name: np.load(io.BytesIO(read_file(store.get, Cid.parse(r.cid)))) for r in t.spec.inputs}
            np.testing.assert_array_equal(got["A"], a[64 * i:64 * (i + 1)])      # its row block, and only it
            np.testing.assert_array_equal(got["B"], b[:, 64 * j:64 * (j + 1)])   # its column block
            assert t.spec.inputs[0].cid not in whole and t.spec.inputs[1].cid not in whole
            # placement's hint: the peer granted the tile is noted as holding its blocks
            ran = next(x["peer"] for x in t.attempts if x["outcome"] == "ok")
            assert all(ran in svc._providers[r.cid] for r in t.spec.inputs)
        ran_on = {a["peer"] for t in js.tasks.values() for a in t.attempts if a["outcome"] == "ok"}
        assert len(ran_on) >= 2                                                   # spread out
        status, _, body = await svc._api_describe(b"", {"id": answer["job_id"]})     # describe says so
        assert {i["input"]: i["cid"] for i in json.loads(body)["inputs"]} == {"A": "cut in 4 blocks",
                                                                             "B": "cut in 4 blocks"}
        cid = next(c for task, out, c in report.outputs if out == "product")
        got = tensor_format.decode(read_file(store.get, Cid.parse(cid)))
        np.testing.assert_allclose(got, a @ b, rtol=0, atol=1e-9)
        nursery.cancel_scope.cancel()


async def test_ipfs_inputs_of_a_split_are_fetched_once_and_cut_by_the_submitting_peer(tmp_path, monkeypatch):
    """A is an ipfs://CID and B an ipfs://CID/path, held by peer C only: peer A (the submitter) resolves the
    path, fetches each once, cuts it into its
    blocks and pins them, so that each tile reads its two blocks, not the whole matrices; a CID nobody holds
    is refused at submit ("input not found"), after the bounded fetch."""
    from p2pcompute.errors import UserError
    from p2pcompute.scheduler import submit as submit_mod

    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((128, 96)), rng.standard_normal((96, 128))
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path, n=3)
        holder = nodes[2].services["storage"].blockstore
        cids = {}
        (tmp_path / "dir").mkdir()                        # B under a directory: ipfs://CID/path
        np.save(tmp_path / "dir" / "b.npy", b)
        for name, path in (("a", tmp_path / "a.npy"), ("dir", tmp_path / "dir")):
            cids[name] = str(import_path(path, holder.put).cid)
            holder.pin(Cid.parse(cids[name]))
        cids["b"] = str(import_path(tmp_path / "b.npy", None).cid)
        job = (f"name: mm\ninputs:\n  A: {{uri: ipfs://{cids['a']}, dtype: float64, shape: [128, 96]}}\n"
               f"  B: {{uri: 'ipfs://{cids['dir']}/b.npy', dtype: float64, shape: [96, 128]}}\n"
               "split: {op: matmul, tile: 64}\n")
        svc = nodes[0].services["scheduler"]
        status, _, body = await svc._api_submit(json.dumps({"job": job, "base": str(tmp_path)}).encode(), {})
        assert status == 200, body
        answer = json.loads(body)
        assert answer["tasks"] == 4 + 1
        with trio.fail_after(180):
            report = await svc.wait(answer["job_id"])
        assert report.kind == "done", report.reason
        store = nodes[0].services["storage"].blockstore
        js = svc.jobs[answer["job_id"]].js
        for task_id, t in js.tasks.items():
            if task_id == "combine":
                continue
            i, j = map(int, task_id.removeprefix("tile/").split("-"))
            assert {r.cid for r in t.spec.inputs}.isdisjoint(cids.values())         # blocks, not the whole
            got = {r.name: np.load(io.BytesIO(read_file(store.get, Cid.parse(r.cid)))) for r in t.spec.inputs}
            assert all(Cid.parse(r.cid) in store.pins for r in t.spec.inputs)       # pinned at the submitter
            np.testing.assert_array_equal(got["A"], a[64 * i:64 * (i + 1)])
            np.testing.assert_array_equal(got["B"], b[:, 64 * j:64 * (j + 1)])
        cid = next(c for task, out, c in report.outputs if out == "product")
        np.testing.assert_allclose(tensor_format.decode(read_file(store.get, Cid.parse(cid))), a @ b, rtol=0,
                                   atol=1e-9)
        monkeypatch.setattr(submit_mod, "CUT_FETCH_S", 1.0)
        nobody = str(import_path(tmp_path / "a.npy", None).cid).replace(cids["a"][-4:], "aaaa")
        missing = job.replace(cids["a"], nobody)
        try:
            await svc._api_submit(json.dumps({"job": missing, "base": str(tmp_path)}).encode(), {})
            raise AssertionError("a split input nobody holds was submitted")
        except UserError as exc:
            assert "input not found" in str(exc) and nobody in str(exc)
        nursery.cancel_scope.cancel()
