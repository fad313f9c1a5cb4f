"""The data registry: signed records and handles, signed links, the service's HTTP routes, records via the DHT."""

from __future__ import annotations

import os
import random
from types import SimpleNamespace

import cbor2
import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.errors import BadSignature, UserError, WireError
from p2pcompute.node.api import ControlApi
from p2pcompute.node.identity import Identity
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.dataref import ByteRange, DataRef
from p2pcompute.storage.importer import import_bytes
from p2pcompute.storage.registry import (DOMAIN, Grant, Metadata, dht_name, link_span, make_record, open_link,
                                         open_record, parse_handle, parse_range_header, sign_link)
from p2pcompute.storage.registry_service import RegistryService
from p2pcompute.storage.service import StorageService

ALICE = Identity.from_seed(b"a" * 32)
DATA = os.urandom(600_000)
CID = import_bytes(DATA).cid
META = Metadata("float32", (1000, 150), "rows:4", (("sha256", "ab" * 32),), (("owner", "lab"),))


# --- records -----------------------------------------------------------------------------------------


def test_record_round_trip_and_self_certifying_handle():
    signed = make_record(ALICE, DataRef(f"ipfs://{CID}"), META, now=1_800_000_000.7)
    assert signed.handle.startswith("dh") and parse_handle(signed.handle) == (ALICE.peer_id, dht_name(signed.handle)[5:])
    opened = open_record(signed.encoded, signed.handle)
    assert opened.record == signed.record and opened.record.created == 1_800_000_000
    assert opened.record.to_json()["shape"] == [1000, 150] and opened.record.owner == ALICE.peer_id
    # another record (other time, other owner) has another handle
    assert make_record(ALICE, DataRef(f"ipfs://{CID}"), META, now=1_800_000_001).handle != signed.handle
    other = make_record(Identity.from_seed(b"b" * 32), DataRef(f"ipfs://{CID}"), META, now=1_800_000_000)
    assert other.handle != signed.handle
    with pytest.raises(BadSignature, match="not the one the handle names"):
        open_record(other.encoded, signed.handle)


def test_altered_records_are_refused():
    signed = make_record(ALICE, DataRef("https://example.org/x.npy"), META, now=1_800_000_000)
    version, body, signature = cbor2.loads(signed.encoded)
    fields = cbor2.loads(body)
    fields["meta"]["dtype"] = "float64"
    forged = cbor2.dumps([version, cbor2.dumps(fields, canonical=True), signature])
    with pytest.raises(BadSignature):
        open_record(forged)
    # re-signed by someone else but claiming Alice as owner: still refused
    mallory = Identity.from_seed(b"m" * 32)
    body2 = cbor2.dumps(fields, canonical=True)
    with pytest.raises(BadSignature):
        open_record(cbor2.dumps([version, body2, mallory.sign(DOMAIN + body2)]))
    with pytest.raises(WireError):
        open_record(b"\x83\x01")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_records_raise_wire_errors_only(data):
    try:
        open_record(data)
    except WireError:
        pass


def test_metadata_and_handles_are_checked():
    with pytest.raises(UserError, match="shape"):
        Metadata(shape=(-1,))
    with pytest.raises(UserError, match="keys are"):
        Metadata(extra=(("bad key", "v"),))
    for text in ("", "dhzzz", "Qmabc", "dh" + "a" * 80, "dh" + "A" * 84):
        with pytest.raises(UserError, match="not a data handle"):
            parse_handle(text)


# --- links ------------------------------------------------------------------------------------------------


KEY = b"k" * 32


def test_signed_links_valid_expired_tampered():
    token = sign_link(KEY, Grant(CID, expires=1000, range=ByteRange(10, 99), handle="dhx"))
    grant = open_link(KEY, token, now=999.5)
    assert grant == Grant(CID, 1000, ByteRange(10, 99), "dhx")
    with pytest.raises(WireError, match="expired"):
        open_link(KEY, token, now=1000)
    with pytest.raises(BadSignature):
        open_link(b"x" * 32, token, now=0)  # another peer's key
    payload, mac = token.split(".")
    forged = sign_link(b"attacker" * 4, Grant(CID, expires=10**9, range=None))
    with pytest.raises(BadSignature):
        open_link(KEY, forged.split(".")[0] + "." + mac, now=0)  # a longer expiry under the old signature
    for i in range(len(payload)):  # any changed character of the payload
        changed = payload[:i] + ("A" if payload[i] != "A" else "B") + payload[i + 1:]
        with pytest.raises(WireError):
            open_link(KEY, changed + "." + mac, now=0)
    for bad in ("", "no-dot", "a.b.c", "!!!.???"):
        with pytest.raises(WireError):
            open_link(KEY, bad, now=0)


def test_range_headers_and_link_spans():
    assert parse_range_header(None, 100) is None
    assert parse_range_header("bytes=10-19", 100) == (10, 10)
    assert parse_range_header("bytes=90-", 100) == (90, 10)
    assert parse_range_header("bytes=-5", 100) == (95, 5)
    assert parse_range_header("bytes=50-500", 100) == (50, 50)
    for bad in ("bytes=100-", "bytes=5-1", "items=1-2", "bytes=1-2,4-5", "bytes=-0"):
        with pytest.raises(UserError):
            parse_range_header(bad, 100)
    whole = Grant(CID, 10)
    assert link_span(whole, None, 100) == (0, 100)
    part = Grant(CID, 10, ByteRange(10, 19))
    assert link_span(part, None, 100) == (10, 10)
    assert link_span(part, (12, 3), 100) == (12, 3)
    with pytest.raises(UserError, match="allows bytes 10-19"):
        link_span(part, (15, 10), 100)


# --- the service over HTTP ------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def make_api(tmp_path, identity=ALICE, clock=None):
    store = Blockstore(tmp_path / "blocks")
    import_bytes(DATA, lambda c, d: store.put(c, d))
    registry = RegistryService(wall_clock=clock or Clock())
    node = SimpleNamespace(identity=identity, data_dir=tmp_path, peer_id=identity.peer_id,
                           services={"storage": StorageService(store), "registry": registry})
    registry.attach(node)
    api = ControlApi(node, "t0ken")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1",
                               headers={"Authorization": "Bearer t0ken"})
    return client, registry


async def test_register_show_sign_and_serve_ranges(tmp_path):
    clock = Clock()
    client, registry = make_api(tmp_path, clock=clock)
    async with client:
        r = await client.post("/data/register", json={"ref": str(CID), "dtype": "float32", "shape": [1000, 150],
                                                       "partitioning": "rows:4", "meta": {"owner": "lab"}})
        assert r.status_code == 200, r.text
        handle = r.json()["handle"]
        assert r.json()["dht"]["published"] is False  # no DHT on this node: kept locally, and it says so
        shown = (await client.get(f"/data/{handle}")).json()
        assert shown["record"]["ref"] == {"uri": f"ipfs://{CID}"} and shown["record"]["dtype"] == "float32"
        assert shown["source"] == "local" and shown["record"]["owner"] == str(ALICE.peer_id)
        assert (await client.get(f"/data/{handle}", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await client.get("/data/dhnothandle")).status_code == 400

        signed = (await client.post("/data/sign", json={"handle": handle, "ttl": 60})).json()
        anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://127.0.0.1")
        link = signed["path"]
        whole = await anonymous.get(link)  # no API token: the link is the authority
        assert whole.status_code == 200 and whole.content == DATA and whole.headers["accept-ranges"] == "bytes"
        part = await anonymous.get(link, headers={"Range": "bytes=300000-300099"})
        assert part.status_code == 206 and part.content == DATA[300000:300100]
        assert part.headers["content-range"] == f"bytes 300000-300099/{len(DATA)}"
        tail = await anonymous.get(link, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == DATA[-10:]
        assert (await anonymous.get(link, headers={"Range": f"bytes={len(DATA)}-"})).status_code == 416

        tampered = link[:-3] + ("AAA" if link[-3:] != "AAA" else "BBB")
        assert (await anonymous.get(tampered)).status_code == 403
        clock.now += 61
        expired = await anonymous.get(link)
        assert expired.status_code == 403 and "expired" in expired.json()["error"]

        ranged = (await client.post("/data/sign", json={"cid": str(CID), "ttl": 60, "range": "100-199"})).json()
        only = await anonymous.get(ranged["path"])
        assert only.status_code == 206 and only.content == DATA[100:200]
        assert (await anonymous.get(ranged["path"], headers={"Range": "bytes=150-160"})).content == DATA[150:161]
        assert (await anonymous.get(ranged["path"], headers={"Range": "bytes=150-250"})).status_code == 403
        await anonymous.aclose()

        url_rec = (await client.post("/data/register", json={"ref": "https://example.org/x.bin"})).json()
        refused = await client.post("/data/sign", json={"handle": url_rec["handle"]})
        assert refused.status_code == 400 and "by CID" in refused.json()["error"]
        missing = await client.post("/data/sign", json={"cid": str(import_bytes(b"not here").cid)})
        assert missing.status_code == 404
        assert (await client.post("/data/sign", json={"cid": str(CID), "ttl": 10**9})).status_code == 400
        assert (await client.post("/data/register", json={"ref": "/etc/passwd"})).status_code == 400
    assert registry.status()["links_refused"] == 3 and registry.status()["links_served"] == 5


async def test_records_survive_a_restart_and_links_keep_their_key(tmp_path):
    client, _ = make_api(tmp_path)
    async with client:
        handle = (await client.post("/data/register", json={"ref": f"ipfs://{CID}"})).json()["handle"]
        link = (await client.post("/data/sign", json={"cid": str(CID)})).json()["path"]
    client, _ = make_api(tmp_path)  # a new service on the same data dir
    async with client:
        assert (await client.get(f"/data/{handle}")).json()["source"] == "local"
        assert (await client.get(link, headers={"Authorization": ""})).content == DATA
    assert (tmp_path / "link.key").stat().st_mode & 0o777 == 0o600


# --- records through the DHT ----------------------------------------------------------------------------------


async def test_a_handle_resolves_on_another_peer_through_the_dht(tmp_path):
    from p2pcompute.dht.service import DhtConfig, DhtService
    from p2pcompute.node.libp2p_transport import Libp2pTransport
    from p2pcompute.node.messages import Resources
    from p2pcompute.node.node import Node

    config = DhtConfig(k=4, alpha=2, query_timeout=3.0, lookup_timeout=20.0, bootstrap_interval=0.5)
    nodes = []
    async with trio.open_nursery() as nursery:
        for i in range(3):
            ident = Identity.from_seed(bytes([40 + i]) * 32)
            t = Libp2pTransport(ident, ["/ip4/127.0.0.1/tcp/0"], dial_timeout=3.0)
            dht, reg = DhtService(config, rng=random.Random(i)), RegistryService()
            boot = [(nodes[-1][0].peer_id, [nodes[-1][0].transport.listen_addresses()[0].split("/p2p/")[0]])] \
                if nodes else []
            (tmp_path / str(i)).mkdir()
            node = Node(t, resources=Resources(1.0, 1 << 30, {}), bootstrap=boot, target_peers=1,
                        rng=random.Random(i), data_dir=tmp_path / str(i), services=[dht, reg])
            await nursery.start(node.run)
            nodes.append((node, dht, reg))
        with trio.fail_after(15):
            while not all(len(d.table) >= 1 for _, d, _ in nodes):
                await trio.sleep(0.05)
        signed, outcome = await nodes[0][2].register(DataRef(f"ipfs://{CID}"), META)
        assert outcome["published"] and outcome["stored_on"] >= 1
        record, source = await nodes[2][2].resolve(signed.handle)
        assert source == "dht" and record.record == signed.record
        assert (await nodes[2][2].resolve(signed.handle))[1] == "local"  # cached, verified
        nursery.cancel_scope.cancel()


def test_links_listener_serves_signed_links_and_nothing_else(tmp_path):
    """With links_listen set, others fetch a signed link there; every other route is absent."""
    import json
    import subprocess
    import sys
    import time

    import httpx

    from p2pcompute.node.client import ControlClient

    data_dir = tmp_path / "peer"
    env = dict(__import__("os").environ, P2PCOMPUTE_LINKS_LISTEN="127.0.0.1:0")
    proc = subprocess.Popen([sys.executable, "-m", "p2pcompute", "join", "--data-dir", str(data_dir), "--listen",
                             "/ip4/127.0.0.1/tcp/0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True)
    try:
        status = json.loads("".join(iter(proc.stdout.readline, "}\n")) + "}")
        links = status["links"]
        (tmp_path / "f.txt").write_bytes(b"0123456789" * 100)
        added = subprocess.run([sys.executable, "-m", "p2pcompute", "add", str(tmp_path / "f.txt"), "--json",
                                "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)
        cid = json.loads(added.stdout)["cid"]
        answer = ControlClient(data_dir)._call("POST", "/data/sign", json={"cid": cid, "ttl": 60})
        assert answer["url"].startswith(links)
        got = httpx.get(answer["url"], headers={"Range": "bytes=10-19"})
        assert got.status_code == 206 and got.content == b"0123456789"
        assert httpx.get(links + "/v1/status").status_code == 404  # the control API is not there
        assert httpx.get(links + "/data/link?token=forged").status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# --- the public links route under attack -----------------------------------------------------------------------


async def call_asgi(api, path, *, headers=(), body_chunks=(), send_gate=None):
    """One raw ASGI request; returns (status, body bytes, bytes of the request body the app read)."""
    path, _, query = path.partition("?")
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(),
             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    chunks = list(body_chunks)
    state = {"read": 0, "status": None, "body": [], "started": trio.Event()}

    async def receive():
        if chunks:
            chunk = chunks.pop(0)
            state["read"] += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await trio.sleep_forever()

    async def send(event):
        if event["type"] == "http.response.start":
            state["status"] = event["status"]
            state["started"].set()
        else:
            if send_gate is not None:
                await send_gate.wait()
            state["body"].append(event.get("body", b""))

    await api(scope, receive, send)
    return state["status"], b"".join(state["body"]), state["read"]


async def test_a_link_request_with_a_body_is_refused_before_any_of_it_is_read(tmp_path):
    client, registry = make_api(tmp_path)
    api = client._transport.app
    async with client:
        link = (await client.post("/data/sign", json={"cid": str(CID), "ttl": 60})).json()["path"]
    big = [b"x" * (1 << 20)] * 64
    for path in (link, "/data/link?token=forged"):
        status, _, read = await call_asgi(api, path, headers=[("content-length", str(64 << 20))], body_chunks=big)
        assert (status, read) == (413, 0)
        status, _, read = await call_asgi(api, path, headers=[("transfer-encoding", "chunked")], body_chunks=big)
        assert (status, read) == (413, 0)
    status, body, _ = await call_asgi(api, link)
    assert status == 200 and body == DATA


async def test_malformed_link_tokens_get_a_403_and_no_traceback(tmp_path, caplog):
    client, registry = make_api(tmp_path)
    anonymous = httpx.AsyncClient(transport=client._transport, base_url="http://127.0.0.1")
    async with anonymous:
        for token in ("x.y", "x", "a.b.c", "", "%ff.%00", "Zm9v.", ".Zm9v", "A" * 5000 + ".B"):
            r = await anonymous.get("/data/link", params={"token": token})
            assert r.status_code == 403, (token, r.text)
    assert not [rec for rec in caplog.records if rec.levelno >= 40]  # nothing logged as an error


async def test_at_most_max_public_link_requests_run_at_once_and_answers_are_streamed(tmp_path):
    from p2pcompute.node.api import MAX_PUBLIC

    client, registry = make_api(tmp_path)
    api = client._transport.app
    async with client:
        link = (await client.post("/data/sign", json={"cid": str(CID), "ttl": 60})).json()["path"]
    gate = trio.Event()  # slow clients: they do not take the body until the gate opens
    results = []
    async with trio.open_nursery() as nursery:
        async def slow():
            results.append(await call_asgi(api, link, send_gate=gate))
        for _ in range(MAX_PUBLIC):
            nursery.start_soon(slow)
        with trio.fail_after(30):
            while api._public_slots.value:
                await trio.sleep(0.01)
            status, body, _ = await call_asgi(api, link)
        assert status == 503 and b"busy" in body
        gate.set()
    assert [(s, b == DATA) for s, b, _ in results] == [(200, True)] * MAX_PUBLIC
    status, body, _ = await call_asgi(api, link)  # the slots were given back
    assert status == 200 and body == DATA


async def test_one_client_address_is_held_to_the_public_rate_with_429s(tmp_path, autojump_clock):
    from p2pcompute.node.api import PUBLIC_BURST, PUBLIC_RATE

    client, registry = make_api(tmp_path)
    api = client._transport.app
    async with client:
        link = (await client.post("/data/sign", json={"cid": str(CID), "ttl": 60})).json()["path"]
    statuses = [(await call_asgi(api, link))[0] for _ in range(PUBLIC_BURST + 10)]
    assert statuses[:PUBLIC_BURST] == [200] * PUBLIC_BURST and statuses[PUBLIC_BURST:] == [429] * 10
    await trio.sleep(1.0)  # the bucket refills
    assert [(await call_asgi(api, link))[0] for _ in range(int(PUBLIC_RATE))] == [200] * int(PUBLIC_RATE)
