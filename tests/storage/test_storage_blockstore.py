"""Block store on disk: atomic verified blocks, corruption detected, pins persisted, GC, size limit; CAR import/export."""

import io
import os

import pytest

from p2pcompute.errors import BlockNotFound, CorruptBlock, HashMismatch, StorageFull
from p2pcompute.storage import car, exporter
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.importer import import_bytes


def _add(store, data, **options):
    return import_bytes(data, store.put, chunk_size=1024, **options).cid


def test_put_get_and_layout(tmp_path):
    store = Blockstore.for_data_dir(tmp_path)
    cid = Cid.of(b"hello")
    assert store.put(cid, b"hello") and not store.put(cid, b"hello")
    assert store.get(cid) == b"hello" and store.has(cid)
    assert store.get(Cid(1, 0x70, cid.multihash)) == b"hello"  # keyed by multihash, like kubo's flatfs
    path = store.path(cid)
    assert path.parent.parent == tmp_path / "blocks" and path.name.endswith(".data")
    assert not list((tmp_path / "blocks" / ".tmp").iterdir())  # temp files renamed away
    assert store.total_bytes == 5 and len(store) == 1
    with pytest.raises(HashMismatch):
        store.put(Cid.of(b"x"), b"y")
    with pytest.raises(BlockNotFound):
        store.get(Cid.of(b"missing"))
    assert Blockstore.for_data_dir(tmp_path).total_bytes == 5  # recounted on open


def test_corrupted_block_on_disk_is_detected_and_removed(tmp_path):
    store = Blockstore(tmp_path / "blocks")
    data = os.urandom(5000)
    root = _add(store, data)
    victim = next(c for c in store.walk(root) if c != root)
    raw = bytearray(store.path(victim).read_bytes())
    raw[len(raw) // 2] ^= 1
    store.path(victim).write_bytes(bytes(raw))
    with pytest.raises(CorruptBlock):
        exporter.read_file(store.get, root)
    assert not store.has(victim)  # removed, so it can be fetched again
    with pytest.raises(BlockNotFound):
        store.get(victim)


def test_gc_keeps_pinned_dags_and_pins_persist(tmp_path):
    store = Blockstore(tmp_path / "blocks")
    keep_data, drop_data = os.urandom(20_000), os.urandom(20_000)
    keep = _add(store, keep_data, cid_version=1)
    drop = _add(store, drop_data)
    shared = _add(store, keep_data[:1024] + b"x", cid_version=1)  # shares its first leaf with `keep`
    first_leaf = Cid.of(keep_data[:1024])
    assert store.pin(keep) == len(list(store.walk(keep)))
    reopened = Blockstore(tmp_path / "blocks")
    assert reopened.pins == {keep}
    removed, freed = reopened.gc()
    assert removed > 0 and freed > 0
    assert exporter.read_file(reopened.get, keep) == keep_data
    for gone in (drop, shared):
        with pytest.raises(BlockNotFound):
            reopened.get(gone)
    assert reopened.get(first_leaf) == keep_data[:1024]
    assert reopened.unpin(keep) and not reopened.unpin(keep)
    reopened.gc()
    assert len(reopened) == 0 and reopened.total_bytes == 0


def test_pin_refuses_incomplete_dag(tmp_path):
    store = Blockstore(tmp_path / "blocks")
    root = _add(store, os.urandom(10_000))
    leaf = next(c for c in store.walk(root) if c != root)
    store.delete(leaf)
    with pytest.raises(BlockNotFound):
        store.pin(root)
    assert store.pins == frozenset()


def test_size_limit_refuses_writes(tmp_path):
    store = Blockstore(tmp_path / "blocks", max_bytes=10_000)
    store.put(Cid.of(b"a" * 6000), b"a" * 6000)
    with pytest.raises(StorageFull, match="limit of 10000 bytes"):
        store.put(Cid.of(b"b" * 6000), b"b" * 6000)
    assert not store.has(Cid.of(b"b" * 6000)) and store.total_bytes == 6000
    store.put(Cid.of(b"a" * 6000), b"a" * 6000)  # already present: no new bytes, no error
    with pytest.raises(StorageFull):
        import_bytes(os.urandom(20_000), store.put)


def test_car_export_import_between_stores(tmp_path):
    a = Blockstore(tmp_path / "a")
    data = os.urandom(300_000)
    root = import_bytes(data, a.put, chunk_size=4096, cid_version=1).cid
    out = io.BytesIO()
    count = car.export_dag(a.get, root, out)
    assert count == len(list(a.walk(root)))
    b = Blockstore(tmp_path / "b")
    reader = car.CarReader(io.BytesIO(out.getvalue()))
    assert reader.roots == [root]
    for cid, block in reader:
        b.put(cid, block, verified=True)
    b.pin(root)
    assert exporter.read_file(b.get, root) == data


@pytest.mark.slow
def test_one_gib_import_and_export_keep_memory_flat(tmp_path):
    """bench/bench_storage.py on 1 GiB: peak RSS growth of import and export stays under 200 MiB."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench" / "bench_storage.py"
    res = subprocess.run([sys.executable, str(bench), "--size", "1GiB", "--dir", str(tmp_path), "--json"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    figures = json.loads(res.stdout)
    for phase in ("import_only_hash", "import_to_blockstore", "export_from_blockstore"):
        assert figures[phase]["peak_rss_growth_MiB"] < 200, figures


def test_racing_writers_of_the_same_blocks_count_them_once(tmp_path):
    import threading

    store = Blockstore(tmp_path / "blocks", max_bytes=10**6)
    blocks = [os.urandom(1000) for _ in range(50)]
    barrier = threading.Barrier(4)

    def writer():
        barrier.wait()
        for data in blocks:
            store.put(Cid.of(data), data)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.total_bytes == 50_000 == Blockstore(tmp_path / "blocks").total_bytes
    assert not list((tmp_path / "blocks" / ".tmp").iterdir())


def test_two_blockstore_objects_on_one_dir_keep_each_others_pins(tmp_path):
    """A daemon and a local `add` each hold a Blockstore of the same data dir."""
    from p2pcompute.storage.blockstore import Blockstore
    from p2pcompute.storage.importer import import_bytes

    daemon, local = Blockstore(tmp_path / "blocks"), Blockstore(tmp_path / "blocks")
    a = import_bytes(b"pinned by the local add", local.put).cid
    b = import_bytes(b"pinned by the daemon", daemon.put).cid
    local.pin(a)
    daemon.pin(b)  # must not drop a, which this object had not seen
    assert Blockstore(tmp_path / "blocks").pins == {a, b}
    daemon.unpin(b)
    assert Blockstore(tmp_path / "blocks").pins == {a}


def test_pins_go_to_an_append_only_log_folded_into_the_snapshot_past_a_bound(tmp_path, monkeypatch):
    """Two stores on one dir pin and unpin in turn: each sees the other's changes (read from the log's
    tail, or whole after a compaction), a fresh store sees the same set, and the log is folded into
    pins.json once it has more lines than the bound and the pin count."""
    from p2pcompute.storage import blockstore as bs

    monkeypatch.setattr(bs, "PIN_LOG_COMPACT", 8)
    root = tmp_path / "blocks"
    one, two = Blockstore(root), Blockstore(root)
    cids = [_add(one, b"item %d" % i) for i in range(30)]
    want: set = set()
    for i, cid in enumerate(cids):
        (one if i % 2 else two).pin(cid)
        want.add(cid)
        if i % 3 == 2:
            (two if i % 2 else one).unpin(cids[i - 2])
            want.discard(cids[i - 2])
        for store in (one, two):
            store.reload_pins()
            assert store.pins == want
        assert Blockstore(root).pins == want
        assert not (root / bs.PINS_LOG).exists() or len((root / bs.PINS_LOG).read_bytes().splitlines()) <= max(8, len(want) + 1)   # (an unpin may follow the last fold)
    assert (root / bs.PINS_FILE).exists()             # compactions happened
    assert one.gc()[0] == len(cids) - len(want)       # GC keeps exactly what the log and the snapshot pin


def test_a_pin_log_line_cut_short_by_a_crash_is_ignored_and_folded_away(tmp_path):
    root = tmp_path / "blocks"
    store = Blockstore(root)
    a, b = _add(store, b"a"), _add(store, b"b")
    store.pin(a)
    with open(root / "pins.log", "ab") as fh:
        fh.write(f"+{b}".encode()[:-3])               # a writer died mid-line
    again = Blockstore(root)
    assert again.pins == {a}
    assert not (root / "pins.log").exists()           # what was whole went into pins.json
    again.pin(b)
    assert Blockstore(root).pins == {a, b}


def test_a_bad_pin_log_line_is_an_error_naming_the_file(tmp_path):
    from p2pcompute.errors import StorageError

    root = tmp_path / "blocks"
    Blockstore(root)
    (root / "pins.log").write_bytes(b"+not-a-cid\n")
    with pytest.raises(StorageError, match="pins.log"):
        Blockstore(root)


def test_the_pin_set_can_be_read_from_one_thread_while_another_pins(tmp_path):
    """The set is replaced, never changed in place: a reader never sees it change under iteration."""
    import threading

    store = Blockstore(tmp_path / "blocks")
    cids = [_add(store, b"t%d" % i) for i in range(200)]
    done, errors = threading.Event(), []

    def read() -> None:
        while not done.is_set():
            try:
                sorted(str(c) for c in store.pins)
            except RuntimeError as exc:       # "Set changed size during iteration"
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for cid in cids:
            store.pin(cid)
    finally:
        done.set()
        reader.join()
    assert not errors
    assert store.pins == set(cids) == Blockstore(tmp_path / "blocks").pins
