"""The storage service's control API routes: /v1/add and /v1/cat, and their refusals of bad arguments."""

import os
from types import SimpleNamespace

import httpx

from p2pcompute.node.api import ControlApi
from p2pcompute.node.identity import Identity
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.importer import import_bytes
from p2pcompute.storage.service import StorageService

DATA = os.urandom(300_000)


def make_client(tmp_path):
    store = Blockstore(tmp_path / "blocks")
    ident = Identity.from_seed(b"s" * 32)
    node = SimpleNamespace(identity=ident, data_dir=tmp_path, peer_id=ident.peer_id, services={})
    service = StorageService(store)
    node.services["storage"] = service
    service.attach(node)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=ControlApi(node, "tok")),
                             base_url="http://127.0.0.1", headers={"Authorization": "Bearer tok"}), store


async def test_add_and_cat_with_ranges(tmp_path):
    client, store = make_client(tmp_path)
    async with client:
        r = await client.post("/v1/add", params={"cid-version": "1", "pin": "0"}, content=DATA)
        assert r.status_code == 200, r.text
        cid = r.json()["cid"]
        assert cid == str(import_bytes(DATA, cid_version=1).cid) and not store.pins
        r = await client.get("/v1/cat", params={"cid": cid, "offset": "1000", "length": "10"})
        assert r.status_code == 200 and r.content == DATA[1000:1010]


async def test_bad_arguments_get_a_clear_400_not_a_500(tmp_path):
    client, store = make_client(tmp_path)
    async with client:
        cid = (await client.post("/v1/add", content=DATA)).json()["cid"]
        for params in ({"offset": "abc"}, {"offset": "-5"}, {"length": "-1"}, {"length": "1e3"},
                       {"offset": "9" * 40}, {"offset": "١٢"}):
            r = await client.get("/v1/cat", params={"cid": cid} | params)
            assert r.status_code == 400, (params, r.status_code, r.text)
            assert next(iter(params)) in r.json()["error"]
        for params in ({"cid-version": "x"}, {"cid-version": "2"}, {"raw-leaves": "maybe"}, {"pin": "yes please"}):
            r = await client.post("/v1/add", params=params, content=b"hello")
            assert r.status_code == 400, (params, r.status_code, r.text)
        missing = str(import_bytes(b"not here").cid)
        r = await client.get("/v1/cat", params={"cid": missing})
        assert r.status_code == 404 and "not (wholly) here" in r.json()["error"]
