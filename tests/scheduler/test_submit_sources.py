"""Inputs given as URLs and registry handles: the submitting peer fetches or resolves them to CIDs
(scheduler/submit_sources.py). A real HTTP server (http.server in a thread, on loopback) serves .npy files;
a real libp2p peer with storage, bitswap, registry, compute and the scheduler takes the submissions.
"""

from __future__ import annotations

import http.server
import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import trio

from p2pcompute.errors import UserError
from p2pcompute.gossip.service import MembershipService
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.ops import tensor_format
from p2pcompute.ops.service import ComputeService
from p2pcompute.scheduler import submit_sources
from p2pcompute.scheduler.service import SchedulerService
from p2pcompute.storage.bitswap_service import BitswapService
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.dataref import DataRef
from p2pcompute.storage.exporter import read_file
from p2pcompute.storage.importer import import_path
from p2pcompute.storage.registry import Metadata
from p2pcompute.storage.registry_service import RegistryService
from p2pcompute.storage.service import StorageService
from test_service_net import config

DOUBLE = {"opset": 1, "inputs": {"x": {}}, "nodes": [{"name": "y", "op": "add", "inputs": ["x", "x"]}],
          "outputs": ["y"]}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def web(tmp_path):
    """A real HTTP server on loopback serving tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Quiet(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    thread.join(5)


def arrays(root: Path, n: int = 3) -> list[np.ndarray]:
    out = []
    for i in range(n):
        a = np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * i
        np.save(root / f"a{i}.npy", a)
        out.append(a)
    return out


async def start_peer(nursery, root: Path) -> Node:
    t = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=3.0)
    node = Node(t, resources=Resources(1.0, 1 << 30, {}), rng=random.Random(1), services=[
        MembershipService(rng=random.Random(101)), StorageService(Blockstore(root / "blocks"), announce_every=3600.0),
        BitswapService(), RegistryService(), ComputeService(cpus=1), SchedulerService(config(), rng=random.Random(2))])
    await nursery.start(node.run)
    await node.services["compute"].executor.wait_ready()
    return node


async def submit(node: Node, job: str, base: Path):
    svc = node.services["scheduler"]
    status, _, body = await svc._api_submit(json.dumps({"job": job, "base": str(base)}).encode(), {})
    assert status == 200, body
    job_id = json.loads(body)["job_id"]
    with trio.fail_after(120):
        report = await svc.wait(job_id)
    assert report.kind == "done", report.reason
    store = node.services["storage"].blockstore
    results = {task: tensor_format.decode(read_file(store.get, Cid.parse(cid))) for task, _, cid in report.outputs}
    status, _, body = await svc._api_describe(b"", {"id": job_id})
    return results, json.loads(body)


def job(inputs: str) -> str:
    return f"name: remote\ninputs:\n  x: {inputs}\nstages:\n  - name: d\n    map: {{over: inputs.x}}\n" \
           f"    ops: {json.dumps(DOUBLE)}\n"


async def test_urls_are_fetched_by_the_submitting_peer_pinned_and_become_cids(tmp_path, web):
    base, www = web
    xs = arrays(www)
    async with trio.open_nursery() as nursery:
        node = await start_peer(nursery, tmp_path)
        urls = [f"{base}/a{i}.npy" for i in range(3)]
        results, described = await submit(node, job(json.dumps(urls)), tmp_path)
        assert sorted(results) == [f"d/0000{i}" for i in range(3)]
        for i, x in enumerate(xs):
            np.testing.assert_array_equal(results[f"d/0000{i}"], 2 * x)
        # the bytes were added and pinned here: each URL's CID is the CID of the file
        store = node.services["storage"].blockstore
        inputs = described["inputs"]
        assert [(s["input"], s["from"], s["source"]) for s in inputs] == [("x", "url", u) for u in urls]
        for i, s in enumerate(inputs):
            assert Cid.parse(s["cid"]) in store.pins
            assert s["cid"] == str(import_path(www / f"a{i}.npy").cid)
        nursery.cancel_scope.cancel()


async def test_a_url_that_fails_is_refused_naming_the_url_and_the_status_and_sizes_are_bounded(tmp_path, web):
    base, www = web
    arrays(www, 1)
    async with trio.open_nursery() as nursery:
        node = await start_peer(nursery, tmp_path)
        svc = node.services["scheduler"]
        with pytest.raises(UserError, match=rf"{base}/missing.npy: the server answered HTTP 404"):
            await svc._api_submit(json.dumps({"job": job(f"{base}/missing.npy"), "base": str(tmp_path)}).encode(), {})
        with pytest.raises(UserError, match=r"127.0.0.1:1/a.npy: ConnectError"):
            await svc._api_submit(json.dumps({"job": job("http://127.0.0.1:1/a.npy"), "base": str(tmp_path)}).encode(),
                                  {})
        from p2pcompute.scheduler import spec as specmod
        spec, problems = specmod.check({"name": "r", "inputs": {"x": f"{base}/a0.npy"}, "ops": DOUBLE}, tmp_path)
        assert not problems
        with pytest.raises(UserError, match="over the size limit of 100 bytes"):
            await submit_sources.resolve_remote(spec, node, max_bytes=100)
        assert svc.jobs == {}                     # nothing was submitted
        nursery.cancel_scope.cancel()


async def test_registry_handles_resolve_to_their_cids(tmp_path, web):
    base, www = web
    xs = arrays(www, 2)
    async with trio.open_nursery() as nursery:
        node = await start_peer(nursery, tmp_path)
        storage, registry = node.services["storage"], node.services["registry"]
        # one handle names a CID held here, the other a URL (fetched at submit time)
        with storage.blockstore.session():
            cid = import_path(www / "a0.npy", storage.blockstore.put).cid
            storage.blockstore.pin(cid)
        by_cid, _ = await registry.register(DataRef.parse(f"ipfs://{cid}"), Metadata("float32", (2, 3)))
        by_url, _ = await registry.register(DataRef.parse(f"{base}/a1.npy"), Metadata())
        results, described = await submit(node, job(json.dumps([by_cid.handle, by_url.handle])), tmp_path)
        np.testing.assert_array_equal(results["d/00000"], 2 * xs[0])
        np.testing.assert_array_equal(results["d/00001"], 2 * xs[1])
        assert [(s["from"], s["source"]) for s in described["inputs"]] == \
            [("handle", by_cid.handle), ("handle", by_url.handle)]
        assert described["inputs"][0]["cid"] == str(cid)
        assert described["inputs"][1]["cid"] == str(import_path(www / "a1.npy").cid)
        # the record's dtype and shape are the input's hint
        from p2pcompute.scheduler import spec as specmod
        spec, _ = specmod.check({"name": "r", "inputs": {"x": by_cid.handle}, "ops": DOUBLE}, tmp_path)
        got = await submit_sources.resolve_remote(spec, node)
        assert got[by_cid.handle] == submit_sources.Remote(str(cid), None, "handle", (2, 3), "float32")
        # a handle nobody registered (this peer runs no DHT to ask)
        unknown = by_cid.handle[:-4] + ("aaaa" if not by_cid.handle.endswith("aaaa") else "bbbb")
        spec, _ = specmod.check({"name": "r", "inputs": {"x": unknown}, "ops": DOUBLE}, tmp_path)
        with pytest.raises(UserError, match=f"handle {unknown}: no record"):
            await submit_sources.resolve_remote(spec, node)
        nursery.cancel_scope.cancel()
