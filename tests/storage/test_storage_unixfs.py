"""Importer shape (against a top-down reference of kubo's balanced layout), exporter ranges, directories."""

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.errors import BadBlock, UserError
from p2pcompute.storage import dagpb, exporter, unixfs
from p2pcompute.storage.cid import DAG_PB, RAW, Cid, sha256_multihash
from p2pcompute.storage.importer import FileImporter, import_bytes, import_path, import_stream


def _reference_root(data: bytes, chunk: int, max_links: int, raw_leaves: bool, version: int) -> Cid:
    """kubo's balanced layout, top-down: grow the root one depth at a time, filling each node recursively."""
    chunks = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
    it = iter(chunks)
    pending = [next(it)]

    def cid_of(codec, block):
        mh = sha256_multihash(block)
        return Cid(0, DAG_PB, mh) if codec == DAG_PB and version == 0 else Cid(1, codec, mh)

    def leaf(c):
        if raw_leaves:
            return cid_of(RAW, c), len(c), len(c)
        block = dagpb.encode(dagpb.PBNode((), unixfs.encode(unixfs.UnixFSData(unixfs.FILE, c or None, len(c)))))
        return cid_of(DAG_PB, block), len(block), len(c)

    def parent(children):
        fs = unixfs.UnixFSData(unixfs.FILE, None, sum(c[2] for c in children), tuple(c[2] for c in children))
        block = dagpb.encode(dagpb.PBNode(tuple(dagpb.PBLink(c[0], "", c[1]) for c in children), unixfs.encode(fs)))
        return cid_of(DAG_PB, block), len(block) + sum(c[1] for c in children), fs.filesize

    def more():
        if not pending:
            try:
                pending.append(next(it))
            except StopIteration:
                return False
        return True

    def fill(children, depth):
        while len(children) < max_links and more():
            children.append(leaf(pending.pop()) if depth == 1 else fill([], depth - 1))
        return parent(children)

    root = leaf(pending.pop())
    depth = 1
    while more():
        root = fill([root], depth)
        depth += 1
    return root[0]


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 200), st.integers(1, 5), st.integers(2, 5), st.booleans(), st.sampled_from([0, 1]))
def test_streaming_tree_equals_top_down_layout(n, chunk, max_links, raw_leaves, version):
    data = os.urandom(n)
    ours = import_bytes(data, chunk_size=chunk, max_links=max_links, raw_leaves=raw_leaves, cid_version=version)
    assert ours.cid == _reference_root(data, chunk, max_links, raw_leaves, version)
    assert ours.size == n


def _store():
    blocks = {}
    return blocks, (lambda cid, block: blocks.__setitem__(cid, block)), (lambda cid: blocks[cid])


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 7), st.integers(2, 4), st.booleans(), st.integers(0, 450),
       st.one_of(st.none(), st.integers(0, 450)))
def test_export_round_trip_and_ranges(data, chunk, max_links, raw_leaves, offset, length):
    blocks, put, get = _store()
    root = import_bytes(data, put, chunk_size=chunk, max_links=max_links, raw_leaves=raw_leaves, cid_version=1).cid
    assert exporter.read_file(get, root) == data
    want = data[offset:] if length is None else data[offset:offset + length]
    assert exporter.read_file(get, root, offset, length) == want
    assert exporter.stat(get, root).size == len(data)


def test_range_read_touches_only_needed_blocks():
    blocks, put, get = _store()
    data = os.urandom(3000)
    root = import_bytes(data, put, chunk_size=10, max_links=4).cid  # 300 leaves, depth 5
    touched = []
    assert exporter.read_file(lambda c: touched.append(c) or get(c), root, 2995) == data[2995:]
    assert len(touched) <= 6  # one block per level


def test_three_level_tree_exact_counts():
    # 174 links, tiny chunks: 174*174 + 1 chunks makes a three-level tree (the root gains a level)
    data = bytes(range(256)) * ((174 * 174 + 1) // 256 + 1)
    data = data[:174 * 174 + 1]
    blocks, put, get = _store()
    puts = []
    result = import_bytes(data, lambda c, b: puts.append(c) or put(c, b), chunk_size=1, raw_leaves=True,
                          cid_version=1)
    root = dagpb.decode(blocks[result.cid])
    assert len(root.links) == 2
    second = dagpb.decode(blocks[root.links[1].hash])
    assert len(second.links) == 1 and len(dagpb.decode(blocks[second.links[0].hash]).links) == 1
    # leaves, 175 depth-1 nodes (the last holds one leaf), 2 depth-2 nodes, the root
    assert result.blocks == len(puts) == (174 * 174 + 1) + 175 + 2 + 1
    assert exporter.read_file(get, result.cid) == data


def test_stream_with_short_reads_makes_the_same_cid():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data = memoryview(data)

        def readable(self):
            return True

        def read(self, n=-1):
            piece = bytes(self.data[:min(n, 1000)])
            self.data = self.data[len(piece):]
            return piece

    data = os.urandom(600_000)
    assert import_stream(Trickle(data)).cid == import_bytes(data).cid


def test_importer_options_and_misuse():
    with pytest.raises(UserError):
        FileImporter(cid_version=2)
    imp = FileImporter()
    imp.finish()
    with pytest.raises(RuntimeError):
        imp.add_chunk(b"x")
    assert import_bytes(b"x", raw_leaves=True).cid.codec == RAW
    assert import_bytes(b"x", cid_version=1, raw_leaves=False).cid.codec == DAG_PB


def test_directory_listing_symlink_and_hidden(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"bee")
    (tmp_path / "d" / "a").write_bytes(b"ay")
    (tmp_path / "d" / ".hidden").write_bytes(b"h")
    os.symlink("a", tmp_path / "d" / "l")
    blocks, put, get = _store()
    root = import_path(tmp_path / "d", put).cid
    entries = exporter.list_directory(get, root)
    assert [e.name for e in entries] == ["a", "b", "l"]
    assert exporter.read_file(get, entries[1].cid) == b"bee"
    assert exporter.read_symlink(get, entries[2].cid) == b"a"
    assert exporter.stat(get, root).kind == "directory"
    with_hidden = import_path(tmp_path / "d", put, hidden=True).cid
    assert ".hidden" in [e.name for e in exporter.list_directory(get, with_hidden)]
    with pytest.raises(BadBlock):
        list(exporter.iter_file(get, root))


def test_exporter_rejects_lying_dags():
    blocks, put, get = _store()
    leaf = import_bytes(b"abc", put).cid
    fs = unixfs.UnixFSData(unixfs.FILE, None, 5, (5,))  # claims 5 bytes under a 3-byte leaf
    block = dagpb.encode(dagpb.PBNode((dagpb.PBLink(leaf, "", 10),), unixfs.encode(fs)))
    liar = Cid.of(block, DAG_PB, 0)
    blocks[liar] = block
    with pytest.raises(BadBlock):
        exporter.read_file(get, liar)
    fs = unixfs.UnixFSData(unixfs.FILE, None, 9, (3,))  # filesize disagrees with blocksizes
    block = dagpb.encode(dagpb.PBNode((dagpb.PBLink(leaf, "", 10),), unixfs.encode(fs)))
    blocks[Cid.of(block, DAG_PB, 0)] = block
    with pytest.raises(BadBlock):
        exporter.stat(get, Cid.of(block, DAG_PB, 0))
    bad_name = dagpb.encode(dagpb.PBNode((dagpb.PBLink(leaf, "../x", 10),), unixfs.DIRECTORY_DATA))
    blocks[Cid.of(bad_name, DAG_PB, 0)] = bad_name
    with pytest.raises(BadBlock):
        exporter.list_directory(get, Cid.of(bad_name, DAG_PB, 0))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=70_000))
def test_leaf_fast_path_equals_the_codecs(chunk):
    from p2pcompute.storage.importer import leaf_block

    slow = dagpb.encode(dagpb.PBNode((), unixfs.encode(unixfs.UnixFSData(unixfs.FILE, chunk or None, len(chunk)))))
    assert leaf_block(chunk) == slow
