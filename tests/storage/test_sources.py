"""Sources: DataRef parsing, http(s) with headers and ranges, a kubo RPC API, a trustless gateway, files, ipfs://.

Every server here is started by the test on 127.0.0.1 (hypercorn on trio).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from urllib.parse import parse_qs

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.errors import BadBlock, HashMismatch, UserError
from p2pcompute.storage import exporter
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.car import CarWriter, iter_dag
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.dataref import ByteRange, DataRef, resolve_credentials
from p2pcompute.storage.importer import import_bytes
from p2pcompute.storage.sources import KuboRpc, fetch, read_ref

DATA = os.urandom(700_000)  # three chunks: a two-level DAG


# --- a tiny ASGI server on loopback ---------------------------------------------------------------


async def serve(nursery, app):
    from hypercorn.config import Config
    from hypercorn.trio import serve as hyper

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.1

    async def with_lifespan(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        await app(scope, receive, send)

    bound = await nursery.start(lambda task_status: hyper(with_lifespan, config, task_status=task_status, mode="asgi"))
    return bound[0]


async def respond(send, status, body=b"", headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive):
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            return body


def web_app(payload, *, need=None, honour_range=True, seen=None):
    """Serves ``payload`` at /data; checks header ``need``; answers Range requests unless told not to."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if seen is not None:
            seen.append(headers)
        if need and headers.get(need[0].lower()) != need[1]:
            return await respond(send, 401, b"who are you")
        if scope["path"] != "/data":
            return await respond(send, 404, b"no")
        rng = headers.get("range")
        if rng and honour_range:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            first, last = int(first), min(int(last) if last else len(payload) - 1, len(payload) - 1)
            if first >= len(payload):
                return await respond(send, 416)
            part = payload[first:last + 1]
            return await respond(send, 206, part, [(b"content-range", f"bytes {first}-{last}/{len(payload)}".encode())])
        await respond(send, 200, payload)

    return app


@pytest.fixture
def store(tmp_path):
    return Blockstore(tmp_path / "blocks")


# --- DataRef ---------------------------------------------------------------------------------------


CID0 = str(import_bytes(b"hello").cid)
CID1 = str(import_bytes(b"hello", cid_version=1).cid)


def test_dataref_kinds_and_canonical_forms(tmp_path):
    assert DataRef.parse(f"ipfs://{CID0}/a/b/").uri == f"ipfs://{CID0}/a/b"
    ref = DataRef.parse(f"ipfs://{CID0}/a/b")
    assert (ref.kind, str(ref.cid), ref.path) == ("ipfs", CID0, ("a", "b"))
    kubo = DataRef.parse(f"ipfs://{CID1}", ipfs_api="http://127.0.0.1:5001")
    assert kubo.uri == f"kubo-rpc://127.0.0.1:5001/{CID1}" and kubo.api_base == "http://127.0.0.1:5001"
    gw = DataRef.parse(f"https://gw.example/ipfs/{CID1}?format=car")
    assert gw.kind == "gateway" and str(gw.cid) == CID1
    assert DataRef.parse("https://example.org/x.bin").kind == "http"
    local = DataRef.parse("data.bin", cwd=tmp_path)
    assert local.kind == "file" and local.file_path == tmp_path / "data.bin"
    assert DataRef.parse("/tmp/a b.bin").uri == "file:///tmp/a%20b.bin"
    assert DataRef.parse("/tmp/a b.bin").file_path.name == "a b.bin"
    ranged = DataRef.parse("http://h/x", range="10-19", expect="sha256:" + "ab" * 32, headers={"X-Tag": "1"})
    assert ranged.range == ByteRange(10, 19) and ranged.range.length == 10 and ranged.expect_sha256 == "ab" * 32
    assert ranged.range.header() == "bytes=10-19"


@pytest.mark.parametrize("text, kwargs, words", [
    ("", {}, "1 to"),
    ("ftp://x/y", {}, "unknown scheme"),
    ("ipfs://notacid", {}, "not a valid CID"),
    (f"ipfs://{CID0}/../x", {}, "plain names"),
    ("kubo-rpc://nohost/" + CID0, {}, "HOST:PORT"),
    ("http:///x", {}, "needs a host"),
    ("http://h/x", {"headers": {"Authorization": "Bearer s3cret"}}, "secrets do not go"),
    ("http://h/x", {"headers": {"X-A": "a\r\nb"}}, "one line"),
    ("http://h/x", {"credentials": "s3cret-token"}, "never the secret"),
    ("http://h/x", {"range": "9-3"}, "at least the first"),
    ("http://h/x", {"range": "abc"}, "FIRST-LAST"),
    ("http://h/x", {"expect": "sha256:xyz"}, "64 lowercase hex"),
    ("http://h/x", {"expect": "bafynope"}, "give a CID"),
    ("http://h/x", {"ipfs_api": "http://127.0.0.1:5001"}, "ipfs://CID references only"),
    (f"ipfs://{CID0}", {"ipfs_api": "127.0.0.1:5001"}, "RPC API base"),
])
def test_dataref_refuses_with_clear_messages(text, kwargs, words):
    with pytest.raises(UserError, match=words):
        DataRef.parse(text, **kwargs)


def test_dataref_from_json_is_strict():
    with pytest.raises(UserError, match="unknown field"):
        DataRef.from_json({"uri": "http://h/x", "token": "s"})
    with pytest.raises(UserError, match="canonical"):
        DataRef.from_json({"uri": f"ipfs://{CID0}/"})
    with pytest.raises(UserError, match="not valid CBOR"):
        DataRef.from_cbor(b"\xff\x00")


def test_credentials_come_from_env_or_data_dir(tmp_path):
    ref = DataRef.parse("http://h/x", credentials="env:MY_TOKEN")
    assert resolve_credentials(ref, None, {"MY_TOKEN": "abc"})["Authorization"] == "Bearer abc"
    with pytest.raises(UserError, match="MY_TOKEN is not set"):
        resolve_credentials(ref, None, {})
    (tmp_path / "credentials").mkdir()
    (tmp_path / "credentials" / "gw").write_text("Basic dXNlcjpwdw==\n")
    ref = DataRef.parse("http://h/x", credentials="file:gw")
    assert resolve_credentials(ref, tmp_path)["Authorization"] == "Basic dXNlcjpwdw=="
    assert "s3cret" not in json.dumps(ref.to_json())


header_names = st.from_regex(r"X-[A-Za-z0-9-]{1,12}", fullmatch=True)
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20)
segments = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True).filter(lambda s: s not in (".", ".."))


@st.composite
def datarefs(draw):
    cid = draw(st.sampled_from([CID0, CID1]))
    path = "/".join(draw(st.lists(segments, max_size=3)))
    uri = draw(st.sampled_from([
        f"ipfs://{cid}" + (f"/{path}" if path else ""),
        f"kubo-rpc://127.0.0.1:{draw(st.integers(1, 65535))}/{cid}",
        f"https://gw.example/ipfs/{cid}?format=car",
        f"http://example.org/{path or 'x'}?q={draw(st.integers(0, 99))}",
        "file:///data/" + (path or "f"),
    ]))
    start = draw(st.integers(0, 1 << 40))
    rng = draw(st.none() | st.builds(lambda n: ByteRange(start, None if n is None else start + n),
                                     st.none() | st.integers(0, 1 << 30)))
    headers = tuple(draw(st.dictionaries(header_names, header_values, max_size=3)).items())
    creds = draw(st.none() | st.from_regex(r"(env|file):[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True))
    expect = draw(st.none() | st.sampled_from([CID0, CID1, "sha256:" + "0f" * 32]))
    return DataRef(uri, headers, creds, rng, expect)


@settings(max_examples=150, deadline=None)
@given(datarefs())
def test_dataref_round_trips_through_json_cbor_and_text(ref):
    assert DataRef.from_json(ref.to_json()) == ref
    assert DataRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref
    assert DataRef.from_cbor(ref.to_cbor()) == ref
    again = DataRef.parse(ref.uri, headers=dict(ref.headers), credentials=ref.credentials,
                          range=None if ref.range is None else str(ref.range), expect=ref.expect)
    assert again == ref


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_dataref_from_garbage_cbor_raises_user_errors_only(data):
    try:
        DataRef.from_cbor(data)
    except UserError:
        pass


# --- http(s) -----------------------------------------------------------------------------------------


async def test_http_fetch_imports_the_bytes_with_headers_and_checks_sha256(store):
    seen = []
    async with trio.open_nursery() as nursery:
        base = await serve(nursery, web_app(DATA, need=("X-Tag", "yes"), seen=seen))
        sha = hashlib.sha256(DATA).hexdigest()
        ref = DataRef.parse(f"{base}/data", headers={"X-Tag": "yes"}, expect=f"sha256:{sha}")
        got = []
        result = await fetch(ref, store, progress=got.append)
        assert result.cid == import_bytes(DATA).cid and result.size == len(DATA) and result.pinned
        assert sum(got) == len(DATA) and exporter.read_file(store.get, result.cid) == DATA
        assert result.cid in store.pins
        # a credentials reference becomes the Authorization header
        ref = DataRef.parse(f"{base}/data", headers={"X-Tag": "yes"}, credentials="env:TOK")
        await fetch(ref, store, environ={"TOK": "t0ken"})
        assert seen[-1]["authorization"] == "Bearer t0ken"
        # without the header the server refuses, and we say so
        with pytest.raises(UserError, match="HTTP 401"):
            await fetch(DataRef.parse(f"{base}/data"), store)
        nursery.cancel_scope.cancel()


async def test_http_checksum_and_cid_mismatches_are_refused_and_not_pinned(store):
    async with trio.open_nursery() as nursery:
        base = await serve(nursery, web_app(DATA))
        with pytest.raises(HashMismatch, match="expected"):
            await fetch(DataRef.parse(f"{base}/data", expect="sha256:" + "00" * 32), store)
        with pytest.raises(HashMismatch, match="expected"):
            await fetch(DataRef.parse(f"{base}/data", expect=CID1), store)
        assert store.pins == frozenset()
        # the expected CID also picks the import options: CIDv1 with raw leaves matches
        v1 = import_bytes(DATA, cid_version=1).cid
        result = await fetch(DataRef.parse(f"{base}/data", expect=str(v1)), store)
        assert result.cid == v1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("honour", [True, False])
async def test_http_byte_ranges(store, honour):
    async with trio.open_nursery() as nursery:
        base = await serve(nursery, web_app(DATA, honour_range=honour))
        for rng, part in (("1000-300999", DATA[1000:301000]), ("650000-", DATA[650000:])):
            result = await fetch(DataRef.parse(f"{base}/data", range=rng), store)
            assert result.cid == import_bytes(part).cid and result.size == len(part)
            assert exporter.read_file(store.get, result.cid) == part
        if honour:
            with pytest.raises(UserError, match="outside the data"):
                await fetch(DataRef.parse(f"{base}/data", range="900000-"), store)
        nursery.cancel_scope.cancel()


async def test_http_size_limit_and_unreachable_server(store):
    from p2pcompute.storage.sources import Limits

    async with trio.open_nursery() as nursery:
        base = await serve(nursery, web_app(DATA))
        with pytest.raises(UserError, match="size limit"):
            await fetch(DataRef.parse(f"{base}/data"), store, limits=Limits(max_bytes=100_000))
        assert store.pins == frozenset()
        nursery.cancel_scope.cancel()
    with pytest.raises(UserError, match="ConnectError"):
        await fetch(DataRef.parse(f"{base}/data"), store, limits=Limits(timeout=2.0))


# --- local files and ipfs:// ---------------------------------------------------------------------------------


async def test_local_file_with_range_and_ipfs_from_the_local_store(store, tmp_path):
    path = tmp_path / "in.bin"
    path.write_bytes(DATA)
    whole = await fetch(DataRef.parse(str(path)), store)
    assert whole.cid == import_bytes(DATA).cid
    part = await fetch(DataRef.parse(str(path), range="10-20"), store)
    assert exporter.read_file(store.get, part.cid) == DATA[10:21]
    ref = DataRef.parse(f"ipfs://{whole.cid}", range="5-9", expect=str(whole.cid))
    local = await fetch(ref, store)
    assert local.cid == whole.cid and local.transferred == 0
    assert read_ref(store, local.cid, ref) == DATA[5:10]
    missing = DataRef.parse(f"ipfs://{import_bytes(b'elsewhere').cid}")
    with pytest.raises(UserError, match="no daemon is running"):
        await fetch(missing, store)
    asked = []

    async def network(cid):  # the daemon's bitswap in real use: here the blocks "arrive" from a second store
        asked.append(cid)
        import_bytes(b"elsewhere", lambda c, d: store.put(c, d))

    assert (await fetch(missing, store, network=network)).cid == missing.cid and asked == [missing.cid]
    with pytest.raises(UserError, match="cannot read"):
        await fetch(DataRef.parse(str(tmp_path / "nope")), store)


# --- a trustless gateway -------------------------------------------------------------------------------------


def make_dir_dag(source):
    """A directory {"a.bin": DATA, "b.txt": ...} in ``source``; its CID."""
    root = source.root.parent / "tree"
    root.mkdir()
    (root / "a.bin").write_bytes(DATA)
    (root / "b.txt").write_bytes(b"beta")
    from p2pcompute.storage.importer import import_path

    return import_path(root, lambda c, d: source.put(c, d), cid_version=1).cid


def gateway_app(source, *, corrupt=False, extra=False):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = parse_qs(scope["query_string"].decode())
        if query.get("format") != ["car"] or headers.get("accept") != "application/vnd.ipld.car":
            return await respond(send, 400, b"trustless gateway: ask for a CAR")
        root = Cid.parse(scope["path"].split("/")[2])
        out = io.BytesIO()
        writer = CarWriter(out, [root])
        for i, (cid, data) in enumerate(iter_dag(source.get, root)):
            if corrupt and i == 2:
                data = data[:-1] + bytes([data[-1] ^ 1])
            writer.write(cid, data)
        if extra:
            stray = b"not part of the DAG"
            writer.write(Cid.of(stray), stray)
        await respond(send, 200, out.getvalue(), [(b"content-type", b"application/vnd.ipld.car")])

    return app


async def test_gateway_car_is_verified_block_by_block(tmp_path):
    source = Blockstore(tmp_path / "source")
    root = make_dir_dag(source)
    async with trio.open_nursery() as nursery:
        good = await serve(nursery, gateway_app(source))
        bad = await serve(nursery, gateway_app(source, corrupt=True))
        stuffed = await serve(nursery, gateway_app(source, extra=True))
        store = Blockstore(tmp_path / "bad")
        with pytest.raises(HashMismatch):
            await fetch(DataRef.parse(f"{bad}/ipfs/{root}?format=car"), store)
        assert store.pins == frozenset()
        with pytest.raises(BadBlock, match="no block before it links to"):
            await fetch(DataRef.parse(f"{stuffed}/ipfs/{root}?format=car"), Blockstore(tmp_path / "stuffed"))
        store = Blockstore(tmp_path / "good")
        ref = DataRef.parse(f"{good}/ipfs/{root}/a.bin?format=car", expect="sha256:" + hashlib.sha256(DATA).hexdigest())
        result = await fetch(ref, store)
        assert result.root == root and result.cid == import_bytes(DATA, cid_version=1).cid
        assert exporter.read_file(store.get, result.cid) == DATA and result.size == len(DATA)
        nursery.cancel_scope.cancel()


# --- kubo RPC ---------------------------------------------------------------------------------------------------


def kubo_app(source, *, lie_about=None):
    """The three RPC endpoints we use, as a kubo daemon answers them (POST, ?arg=, multipart add)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            return await respond(send, 405, b"")
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        body = await read_body(receive)
        command = scope["path"].removeprefix("/api/v0/")
        try:
            if command == "block/get":
                cid = Cid.parse(query["arg"])
                data = source.get(cid)
                if lie_about is not None and cid == lie_about:
                    data = b"x" + data[1:]
                return await respond(send, 200, data)
            if command == "cat":
                cid = Cid.parse(query["arg"])
                length = int(query["length"]) if "length" in query else None
                return await respond(send, 200, exporter.read_file(source.get, cid, int(query.get("offset", 0)), length))
            if command == "add":
                ctype = dict(scope["headers"])[b"content-type"].decode()
                boundary = ctype.split("boundary=")[1].encode()
                part = body.split(b"--" + boundary)[1]
                content = part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
                result = import_bytes(content, lambda c, d: source.put(c, d),
                                      cid_version=int(query.get("cid-version", 0)))
                answer = {"Name": "file", "Hash": str(result.cid), "Size": str(result.tsize)}
                return await respond(send, 200, json.dumps(answer).encode() + b"\n")
        except Exception as exc:  # noqa: BLE001 - kubo answers errors as JSON with HTTP 500
            return await respond(send, 500, json.dumps({"Message": str(exc), "Code": 0, "Type": "error"}).encode())
        await respond(send, 404, b"404 page not found")

    return app


async def test_kubo_rpc_add_cat_and_verified_dag_fetch(tmp_path):
    source = Blockstore(tmp_path / "kubo")
    async with trio.open_nursery() as nursery:
        base = await serve(nursery, kubo_app(source))
        async with KuboRpc(base) as kubo:
            cid = await kubo.add(DATA, cid_version=1)
            assert cid == import_bytes(DATA, cid_version=1).cid
            assert await kubo.cat(cid, 100, 50) == DATA[100:150]
            with pytest.raises(UserError, match="block/get failed"):
                await kubo.block_get(import_bytes(b"never added").cid)
        store = Blockstore(tmp_path / "ours")
        host_port = base.removeprefix("http://")
        result = await fetch(DataRef.parse(f"ipfs://{cid}", ipfs_api=base, expect=str(cid)), store)
        assert result.kind == "kubo" and result.cid == cid and result.transferred >= len(DATA)
        assert exporter.read_file(store.get, cid) == DATA
        assert DataRef.parse(f"kubo-rpc://{host_port}/{cid}").api_base == base
        nursery.cancel_scope.cancel()


async def test_kubo_block_that_does_not_match_its_cid_is_refused(tmp_path):
    source = Blockstore(tmp_path / "kubo")
    root = import_bytes(DATA, lambda c, d: source.put(c, d)).cid
    from p2pcompute.storage import dagpb

    leaf = dagpb.decode(source.get(root)).links[1].hash
    async with trio.open_nursery() as nursery:
        base = await serve(nursery, kubo_app(source, lie_about=leaf))
        store = Blockstore(tmp_path / "ours")
        with pytest.raises(HashMismatch):
            await fetch(DataRef.parse(f"ipfs://{root}", ipfs_api=base), store)
        assert not store.has(leaf) and store.pins == frozenset()
        nursery.cancel_scope.cancel()
    with pytest.raises(UserError, match="no kubo RPC API answers"):
        async with KuboRpc(base) as kubo:
            await kubo.block_get(root)


# --- the CLI ---------------------------------------------------------------------------------------------------


def test_cli_fetch_prints_the_cid_and_refuses_a_mismatch(tmp_path, capsys):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from p2pcompute.cli.main import main

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            self.send_response(200)
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(DATA)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/d"
        sha = hashlib.sha256(DATA).hexdigest()
        assert main(["fetch", url, "--data-dir", str(tmp_path), "--expect", f"sha256:{sha}", "--header", "X-A: 1"]) == 0
        cid = capsys.readouterr().out.strip()
        assert cid == str(import_bytes(DATA).cid)
        store = Blockstore.for_data_dir(tmp_path)
        assert Cid.parse(cid) in store.pins
        assert main(["fetch", url, "--data-dir", str(tmp_path), "--expect", "sha256:" + "1" * 64]) == 1
        assert "expected 1111" in capsys.readouterr().err
        assert main(["fetch", f"ipfs://{import_bytes(b'nowhere').cid}", "--data-dir", str(tmp_path)]) == 1
        assert "no daemon" in capsys.readouterr().err
    finally:
        server.shutdown()
