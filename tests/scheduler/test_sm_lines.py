"""The question a replica asks before it takes a job over (lines.py), without a network.

A newer line answered by a holder asked: the copy is dropped and fenced (``AVERT``), at once. No answer, or
only older or equal lines: the replica takes over once the time allowed is over (``TAKE_OVER``). An answer
that does not hold up (not a line within the wire's bounds, from a peer not asked, a second from one peer)
is counted and ignored. Then the same rules on the service's side (what it answers from, and the fence a
dropped line leaves), and the wire messages' bounds.
"""

from __future__ import annotations

import random

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pcompute.errors import WireError
from p2pcompute.node import wire
from p2pcompute.scheduler.lines import (AVERT, MAX_EPOCH, MAX_NONCE, NO_LINE, TAKE_OVER, WAIT, TakeoverAsk,
                                        known_line, line_of, valid_line)
from p2pcompute.scheduler.messages import LineAnswer, LineQuery

HELD = (2, 500)


def test_a_newer_line_from_a_holder_asked_averts_the_takeover_at_once():
    ask = TakeoverAsk.start(HELD, ["b", "c"])
    assert ask.answer("b", (3, 1)) == AVERT            # a newer epoch (a smaller nonce does not matter)
    assert ask.verdict() == AVERT and ask.newest == (3, 1)
    assert ask.answer("c", (2, 500)) == AVERT           # an older answer after it changes nothing
    assert ask.newest == (3, 1)
    sibling = TakeoverAsk.start(HELD, ["b"])
    assert sibling.answer("b", (2, 501)) == AVERT       # the same epoch, a higher nonce: a sibling that won


def test_no_answer_or_only_older_and_equal_lines_take_over_when_the_time_is_over():
    silent = TakeoverAsk.start(HELD, ["b", "c"])
    assert silent.verdict(final=False) == WAIT
    assert silent.verdict() == TAKE_OVER
    ask = TakeoverAsk.start(HELD, ["b", "c", "d"])
    assert ask.answer("b", (2, 500)) == WAIT            # the same line (a replica of the same coordinator)
    assert ask.answer("c", (1, 9999)) == WAIT           # an older epoch
    assert ask.no_answer("d") == WAIT                   # unreachable
    assert ask.answered == {"b", "c", "d"} and ask.verdict() == TAKE_OVER and ask.bad == 0
    nobody = TakeoverAsk.start(HELD, [])                # no other holder alive: nothing to wait for but time
    assert nobody.verdict(final=False) == WAIT and nobody.verdict() == TAKE_OVER


@pytest.mark.parametrize("garbage", [None, (3,), (3, 1, 0), [3, 1], (True, 1), (3.0, 1), ("3", "1"), (-1, 5),
                                     (5, -1), (MAX_EPOCH + 1, 0), (3, MAX_NONCE + 1), (10 ** 30, 1), "3,1", {}])
def test_a_hostile_answer_is_counted_and_ignored_and_is_that_holders_no_answer(garbage):
    ask = TakeoverAsk.start(HELD, ["b", "c"])
    assert ask.answer("b", garbage) == WAIT
    assert ask.bad == 1 and "b" in ask.answered and ask.newest == NO_LINE
    assert ask.answer("b", (9, 9)) == WAIT              # its second answer is ignored too (one question, one answer)
    assert ask.bad == 2 and ask.verdict() == TAKE_OVER


def test_a_newer_line_from_a_peer_not_asked_is_ignored():
    ask = TakeoverAsk.start(HELD, ["b"])
    assert ask.answer("mallory", (MAX_EPOCH, 0)) == WAIT
    assert ask.bad == 1 and ask.answered == set() and ask.verdict() == TAKE_OVER


line = st.tuples(st.integers(0, MAX_EPOCH), st.integers(0, MAX_NONCE))
junk = st.one_of(st.none(), st.integers(), st.tuples(st.integers(), st.integers()), st.text(max_size=3),
                 st.tuples(st.booleans(), st.integers(0, 5)), st.tuples(st.floats(), st.integers(0, 5)))


@given(held=line, peers=st.lists(st.sampled_from("abcdef"), min_size=0, max_size=6, unique=True),
       answers=st.lists(st.tuples(st.sampled_from("abcdefxyz"), st.one_of(line, junk)), max_size=20))
def test_the_verdict_is_avert_exactly_when_a_first_valid_answer_of_a_holder_asked_is_newer(held, peers, answers):
    ask = TakeoverAsk.start(held, peers)
    first: dict = {}
    for peer, answer in answers:
        verdict = ask.answer(peer, answer)
        if peer in peers and peer not in first:
            first[peer] = answer
        assert verdict in (AVERT, WAIT)
    counted = [a for a in first.values() if valid_line(a)]
    newer = any(a > held for a in counted)
    assert ask.verdict() == (AVERT if newer else TAKE_OVER)
    assert ask.newest == max(counted, default=NO_LINE)
    assert ask.bad == len(answers) - len(counted)


def test_the_line_a_peer_knows_is_the_newest_of_what_it_holds_fenced_or_coordinates():
    assert known_line() == NO_LINE and known_line(None, None) == NO_LINE
    assert known_line((1, 5), None, (2, 0)) == (2, 0)
    assert known_line((4, 0), (3, 9)) == (4, 0)
    assert known_line((True, 1), (1, 0)) == (1, 0)      # an invalid line (a corrupted record) counts as nothing
    assert line_of({"epoch": 3, "nonce": 7}) == (3, 7)
    assert line_of({"epoch": "3"}) == (-1, -1) and line_of(None) == NO_LINE and line_of([]) == NO_LINE


def test_line_messages_round_trip_and_a_line_out_of_bounds_does_not_decode():
    for msg in (LineQuery("j1"), LineAnswer("j1", 3, 7), LineAnswer("j1")):
        assert wire.decode(wire.encode(msg)).message == msg
    for bad in ((True, 1), (-1, 5), (5, -1), (MAX_EPOCH + 1, 0), (0, MAX_NONCE + 1), (1.5, 0)):
        with pytest.raises(ValueError):
            LineAnswer("j1", *bad)
    with pytest.raises(ValueError):
        LineQuery("x" * 200)
    forged = object.__new__(LineAnswer)                 # a peer's frame that breaks the bounds: dropped on decoding
    for name, value in (("job_id", "j1"), ("epoch", 1 << 40), ("nonce", 0)):
        object.__setattr__(forged, name, value)
    with pytest.raises(WireError):
        wire.decode(wire.encode(forged))


# --- the service's side: what it answers from, and the fence a dropped line leaves ---------------------------


def _records():
    from p2pcompute.scheduler.job_state import JobState
    from sm_harness import Coord, plan, task

    old = Coord(plan(task("a"), task("b")), seed=1)
    rec0 = cbor2.loads(cbor2.dumps(old.js.to_record()))
    heir = JobState.from_record(rec0, 5.0, random.Random(2))
    heir.start(5.0)
    return old.js, heir


async def test_a_peer_answers_the_line_of_a_record_it_holds_a_line_it_fenced_or_a_job_it_coordinates():
    from p2pcompute.node.identity import Identity
    from p2pcompute.scheduler.messages import JobRecordFull
    from p2pcompute.scheduler.service import SchedulerService

    old, heir = _records()
    coord = Identity.generate().peer_id
    svc = SchedulerService()
    asker = Identity.generate().peer_id
    assert await svc._on_line_query(asker, LineQuery("job1")) == LineAnswer("job1", -1, -1)
    assert (await svc._on_record(coord, JobRecordFull("job1", cbor2.dumps(old.to_record())))).ok
    assert await svc._on_line_query(asker, LineQuery("job1")) == LineAnswer("job1", 0, old.nonce)
    svc.held.clear()
    svc._fence("job1", (1, heir.nonce))                 # dropped here (for room, or a newer line)
    assert await svc._on_line_query(asker, LineQuery("job1")) == LineAnswer("job1", 1, heir.nonce)
    # the fence refuses the older line a stale coordinator sends again, and takes the newer one
    reply = await svc._on_record(coord, JobRecordFull("job1", cbor2.dumps(old.to_record())))
    assert not reply.ok and reply.reason.startswith("fenced:") and "job1" not in svc.held
    assert (await svc._on_record(coord, JobRecordFull("job1", cbor2.dumps(heir.to_record())))).ok
    svc.fences.clear()
    svc.held.clear()
    svc.jobs["job1"] = svc._new_job(heir, 5.0)          # coordinated here
    assert await svc._on_line_query(asker, LineQuery("job1")) == LineAnswer("job1", 1, heir.nonce)


def test_the_fences_a_service_keeps_are_bounded():
    from p2pcompute.scheduler.replication import MAX_FENCES
    from p2pcompute.scheduler.service import SchedulerService

    svc = SchedulerService()
    for i in range(MAX_FENCES + 10):
        svc._fence(f"j{i}", (0, i))
    svc._fence("j9999", (0, 1))                         # a lower line never replaces a higher one
    assert len(svc.fences) == MAX_FENCES and "j0" not in svc.fences and svc.fences["j9999"] == (0, 9999)
