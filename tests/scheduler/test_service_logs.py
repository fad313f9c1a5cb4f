"""Task stderr (``logs JOB [TASK]``): captured by the executing peer, kept there as a CID, read back through the
coordinator's ``GET /v1/jobs/logs/{id}``, on three real in-process libp2p peers (test_service_net.py's).

Two WebAssembly programs write to their stderr; one exits 0, the other 3. The first job's log shows its line
and the peer that ran it; the failing job's log shows its line for each of its attempts, on the peers that
ran them; a graph task (which writes no stderr) says so.
"""

from __future__ import annotations

import json

import pytest
import trio

from p2pcompute.errors import P2PComputeError
from p2pcompute.ops.executor import open_executor
from p2pcompute.ops.tasks import STDERR_MAX, Limits, Task
from p2pcompute.scheduler import task_logs
from p2pcompute.scheduler.messages import TaskDone, TaskFailure
from p2pcompute.storage.importer import import_bytes
from test_service_net import GRAPH, start_peers, workspace

PROGRAM = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "%s")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const %d))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $exit (i32.const %d))))
"""


def program(text: str, code: int, repeat: int = 1) -> str:
    """A program that writes ``text`` (plus a newline) to its stderr ``repeat`` times, then exits with ``code``."""
    source = PROGRAM % (text + "\\n", len(text) + 1, code)
    call = "(drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))"
    return source.replace(call, "\n    ".join([call] * repeat))


async def add_program(node, source: str) -> str:
    storage = node.services["storage"]
    with storage.blockstore.session():
        result = import_bytes(source.encode(), storage.blockstore.put)
        storage.blockstore.pin(result.cid)
    return str(result.cid)


async def submit(node, text: str, base) -> str:
    status, _, body = await node.services["scheduler"]._api_submit(
        json.dumps({"job": text, "base": str(base)}).encode(), {})
    assert status == 200, body
    return json.loads(body)["job_id"]


async def logs(node, job_id: str, **query) -> dict:
    status, _, body = await node.services["scheduler"]._api_logs(b"", {"id": job_id, **query})
    assert status == 200, body
    return json.loads(body)


async def test_a_tasks_stderr_is_shown_by_logs_for_each_attempt_with_its_peer(tmp_path):
    workspace(tmp_path, 2)
    async with trio.open_nursery() as nursery:
        nodes, _ = await start_peers(nursery, tmp_path)
        a = nodes[0]
        svc = a.services["scheduler"]
        peers = {str(n.peer_id) for n in nodes}
        ok = await add_program(a, program("warning: 3 pixels saturated", 0))
        bad = await add_program(a, program("error: band 4 is missing", 3))
        noisy = await submit(a, f"name: noisy\nprogram: ipfs://{ok}\n", tmp_path)
        failing = await submit(a, f"name: failing\nretries: 1\nprogram: ipfs://{bad}\n", tmp_path)
        quiet = await submit(a, "name: quiet\ninputs: {x: x/*.npy}\nstages:\n  - name: sq\n    map: {over: inputs.x}\n"
                                f"    ops: {json.dumps(GRAPH)}\n", tmp_path)
        with trio.fail_after(150):
            reports = {j: await svc.wait(j) for j in (noisy, failing, quiet)}
        assert reports[noisy].kind == "done", reports[noisy].reason
        assert reports[failing].kind == "failed"
        assert reports[quiet].kind == "done", reports[quiet].reason

        got = await logs(a, noisy)
        [task] = got["tasks"]
        [attempt] = task["attempts"]
        assert attempt["outcome"] == "ok" and attempt["peer"] in peers
        assert attempt["stderr"] == "warning: 3 pixels saturated\n"
        assert attempt["log_bytes"] == len("warning: 3 pixels saturated\n")
        # the text is not in the job record: only its CID, in the attempt
        record = svc.jobs[noisy].js.tasks[task["task"]].attempts[0]
        assert record["log"] == attempt["log"] and "stderr" not in record

        got = await logs(a, failing, task=task["task"])
        [task] = got["tasks"]
        assert task["state"] == "failed" and len(task["attempts"]) == 2
        for n, attempt in enumerate(task["attempts"], 1):
            assert attempt["attempt"] == n and attempt["peer"] in peers and attempt["outcome"] == "failed"
            assert attempt["stderr"] == "error: band 4 is missing\n"
            assert "exit code 3" in attempt["message"]
        assert task["attempts"][0]["peer"] != task["attempts"][1]["peer"]     # retried elsewhere

        got = await logs(a, quiet)
        assert len(got["tasks"]) == 2 and got["tasks_not_shown"] == 0
        for task in got["tasks"]:
            assert task["attempts"] and all(x["stderr"] == "" and "log" not in x for x in task["attempts"])
        assert (await logs(a, quiet, limit="1"))["tasks_not_shown"] == 1
        from p2pcompute.node.api import HttpError
        status, _, body = await svc._api_list(b"", {"state": "failed"})
        assert [j["job_id"] for j in json.loads(body)["jobs"]] == [failing]
        with pytest.raises(HttpError, match="is not one of"):
            await svc._api_list(b"", {"state": "sleeping"})
        with pytest.raises(HttpError, match="has no task"):
            await svc._api_logs(b"", {"id": quiet, "task": "nope"})
        with pytest.raises(HttpError, match="no job"):
            await svc._api_logs(b"", {"id": "jnope"})
        # a log nobody holds any more is a clear error, after a bounded search; a CID too big for a log is refused
        storage = a.services["storage"]
        gone = str(import_bytes(b"a log no peer holds\n").cid)
        with pytest.raises(P2PComputeError):
            await task_logs.read(storage, gone, 1.0)
        with storage.blockstore.session():
            big = import_bytes(b"z" * (task_logs.MAX_LOG_BYTES + 1), storage.blockstore.put).cid
        with pytest.raises(task_logs.NotALog, match="a log holds at most"):
            await task_logs.read(storage, str(big), 1.0)
        nursery.cancel_scope.cancel()


async def test_a_runs_stderr_is_captured_on_success_on_failure_and_bounded(tmp_path):
    """The executor's capture: what the program wrote to its stderr, whatever its exit, the last 64 KiB."""
    long_line = "x" * 1000
    for code, repeat in ((0, 1), (5, 1), (0, 100)):
        path = tmp_path / f"p{code}-{repeat}.wat"
        path.write_text(program(long_line, code, repeat))
        async with open_executor(cpus=1) as executor:
            result = await executor.run(Task("wasm", program=str(path)), tmp_path / "out")
        assert result.status == ("ok" if code == 0 else "failed")
        assert result.stderr == ((long_line + "\n") * repeat)[-STDERR_MAX:]
        assert len(result.stderr.encode()) <= STDERR_MAX
    # a run killed at its wall-time limit: what it wrote before
    path = tmp_path / "forever.wat"
    path.write_text(program("still going", 0).replace("(call $exit (i32.const 0))", "(loop $l (br $l))"))
    async with open_executor(cpus=1) as executor:
        result = await executor.run(Task("wasm", program=str(path), limits=Limits(wall_seconds=1.0)), tmp_path / "o")
    assert result.status == "resource_exceeded" and result.resource == "wall_time"
    assert result.stderr == "still going\n"


def test_a_mapped_tasks_items_are_joined_under_headers_and_the_last_64_kib_kept():
    assert task_logs.joined([(None, "one line")]) == "one line"
    assert task_logs.joined([("00000", "a\n"), ("00001", ""), ("00002", "c")]) == \
        "--- item 00000 ---\na\n--- item 00002 ---\nc\n"
    big = task_logs.joined([("00000", "y" * STDERR_MAX), ("00001", "z" * 10)])
    assert len(big.encode()) == STDERR_MAX and big.endswith("--- item 00001 ---\n" + "z" * 10 + "\n")
    assert task_logs.joined([]) == ""


def test_a_log_that_is_not_a_cid_and_a_bounded_size_is_refused_on_decoding():
    TaskDone("j", "t", "l", log="bafk", log_bytes=10)
    TaskFailure("j", "t", "l", "failed", "m", log="bafk", log_bytes=10)
    for log, size in (("x" * 300, 1), ("bafk", task_logs.MAX_LOG_BYTES + 1), ("bafk", -1), (3, 1), ("b", 1.5)):
        with pytest.raises(ValueError, match="log"):
            TaskDone("j", "t", "l", log=log, log_bytes=size)
        with pytest.raises(ValueError, match="log"):
            TaskFailure("j", "t", "l", "failed", log=log, log_bytes=size)


def test_the_coordinator_keeps_each_attempts_log_cid_in_its_record_and_leaves_out_a_malformed_one():
    """JobState (pure): a log comes with a result or a failure into that attempt, survives the record (what a
    replica takes over from); a log that is not a short string with a byte count is left out, the result kept."""
    import random

    import cbor2
    from sm_harness import Coord, plan, task

    from p2pcompute.scheduler import events as ev
    from p2pcompute.scheduler.job_state import JobState

    c = Coord(plan(task("a"), task("b"), task("c"), retries=3, same=99))
    lease = c.grant("a", "p1")
    c.feed(ev.TaskFailed("a", "p1", lease, ev.FAILED, "exit 3", "bafy-fail", 25))
    c.tick(c.js.tasks["a"].not_before)
    lease = c.grant("a", "p2")
    c.feed(ev.ResultReady("a", "p2", lease, {}, {}, {}, "bafy-ok", 28))
    lease = c.grant("b", "p1")
    c.feed(ev.ResultReady("b", "p1", lease, {}, {}, {}, "x" * 300, 28))    # not a CID: left out
    lease = c.grant("c", "p1")
    c.feed(ev.ResultReady("c", "p1", lease, {}, {}, {}, "bafy-c", -1))     # not a size: left out
    assert [(x["peer"], x["outcome"], x.get("log"), x.get("log_bytes")) for x in c.js.tasks["a"].attempts] == \
        [("p1", ev.FAILED, "bafy-fail", 25), ("p2", "ok", "bafy-ok", 28)]
    for tid in ("b", "c"):
        [attempt] = c.js.tasks[tid].attempts
        assert attempt["outcome"] == "ok" and "log" not in attempt and c.js.tasks[tid].state == "done"
    record = cbor2.loads(cbor2.dumps(c.js.to_record()))
    taken = JobState.from_record(record, 5.0, random.Random(1))
    assert taken.tasks["a"].attempts == c.js.tasks["a"].attempts
