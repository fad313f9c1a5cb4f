"""carry.py: the blocks of small DAGs carried in a grant or a result, checked against their CIDs."""

from __future__ import annotations

import pytest

from p2pcompute.scheduler import carry
from p2pcompute.scheduler.messages import MAX_CARRIED, TaskDone, TaskGrant
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.importer import import_path


def added(store: Blockstore, tmp_path, name: str, size: int) -> str:
    path = tmp_path / name
    path.write_bytes(bytes(i % 251 for i in range(size)))
    return str(import_path(path, store.put).cid)


def test_small_dags_are_gathered_whole_and_kept_at_the_other_end(tmp_path):
    here, there = Blockstore(tmp_path / "a"), Blockstore(tmp_path / "b")
    small = added(here, tmp_path, "small", 1000)
    multi = added(here, tmp_path, "multi", 300_000)        # several blocks, over the budget
    blocks = carry.gather(here, [small, multi, "bafy-not-a-cid"], MAX_CARRIED)
    assert [c for c, _ in blocks] == [small]               # only what fits, whole; the rest is fetched
    assert carry.keep(there, blocks, [small, multi], pin=True) == [small]
    assert {str(c) for c in there.pins} == {small} and there.has(Cid.parse(small))
    two = carry.gather(here, [multi], 400_000)             # a multi-block DAG travels whole, or not at all
    assert len(two) > 1 and carry.keep(Blockstore(tmp_path / "c"), two, [multi], pin=False) == [multi]
    assert carry.gather(here, [multi], 200_000) == ()


def test_a_carried_block_that_is_not_what_its_cid_says_is_dropped_and_its_dag_fetched(tmp_path):
    here, there = Blockstore(tmp_path / "a"), Blockstore(tmp_path / "b")
    cid = added(here, tmp_path, "x", 1000)
    ((_, data),) = carry.gather(here, [cid], MAX_CARRIED)
    assert carry.keep(there, [(cid, data[:-1] + b"!")], [cid], pin=True) == []     # forged bytes: not stored
    assert carry.keep(there, [("not a cid", data)], [cid], pin=True) == []
    other = added(here, tmp_path, "y", 500)                # a valid block, but of no root asked for
    assert carry.keep(there, carry.gather(here, [other], MAX_CARRIED), [cid], pin=False) == []
    assert not there.has(Cid.parse(other))                # not stored: junk cannot be parked here
    assert not any(True for _ in there.pins)


def test_messages_bound_the_blocks_they_carry():
    ok = TaskDone("j", "t", "0.1.2", {"y": "c"}, blocks=(("c", b"x" * 10),))
    assert ok.blocks == (("c", b"x" * 10),)
    with pytest.raises(ValueError, match="over"):
        TaskDone("j", "t", "0.1.2", blocks=(("c", b"x" * (MAX_CARRIED + 1)),))
    with pytest.raises(ValueError, match="pair"):
        TaskGrant("j", "t", "0.1.2", 5.0, b"", blocks=(("c", "not bytes"),))
