"""Job records held for other coordinators are bounded in bytes, and one coordinator gets an eighth (hostile input)."""

from __future__ import annotations

import random

import cbor2

from p2pcompute.node.identity import Identity
from p2pcompute.scheduler.job_state import JobState
from p2pcompute.scheduler.messages import JobRecordDelta, JobRecordFull
from p2pcompute.scheduler.service import SchedulerConfig, SchedulerService
from sm_harness import chain_plan


def record(job_id: str, pad: int = 0) -> bytes:
    rec = JobState(chain_plan(2, job_id=job_id), 0.0, random.Random(1)).to_record()
    rec["padding"] = b"x" * pad  # a hostile coordinator's record may be as large as a frame allows
    return cbor2.dumps(rec)


async def test_a_coordinator_cannot_fill_the_replica_store_and_others_still_get_in():
    service = SchedulerService(SchedulerConfig(max_replica_bytes=8 << 20))
    hostile, honest = Identity.generate().peer_id, Identity.generate().peer_id
    accepted = 0
    for i in range(20):  # 256 KiB records from one peer: only about an eighth of 8 MiB is held
        reply = await service._on_record(hostile, JobRecordFull(f"h{i}", record(f"h{i}", 256 << 10)))
        accepted += reply.ok
    assert accepted == 3 and "bytes held here" in reply.reason
    assert sum(h.size for h in service.held.values()) <= (8 << 20) // 8
    # deltas count too: growing a held record past the share is refused
    big = JobRecordDelta("h0", cbor2.dumps({"padding": b"y" * (1 << 20)}))
    assert not (await service._on_delta(hostile, big)).ok
    # an honest coordinator's record still gets in
    assert (await service._on_record(honest, JobRecordFull("ok", record("ok")))).ok


async def test_finished_records_make_room_running_ones_never_do():
    service = SchedulerService(SchedulerConfig(max_replica_bytes=4 << 20, max_replicas_held=1000))
    peers = [Identity.generate().peer_id for _ in range(12)]
    for i, peer in enumerate(peers[:8]):  # 8 x 480 KiB fill the 4 MiB budget
        assert (await service._on_record(peer, JobRecordFull(f"r{i}", record(f"r{i}", 480 << 10)))).ok
    late = await service._on_record(peers[8], JobRecordFull("late", record("late", 480 << 10)))
    assert not late.ok and "records of running jobs" in late.reason
    service.held["r0"].record["state"] = "done"
    assert (await service._on_record(peers[8], JobRecordFull("late", record("late", 480 << 10)))).ok
    assert "r0" not in service.held and sum(h.size for h in service.held.values()) <= 4 << 20
