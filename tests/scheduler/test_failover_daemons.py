"""Fail-over on real daemons: OS processes on loopback (``Devnet``), SIGKILLed mid-task and mid-job.

Every task runs a WebAssembly program that spins for a few seconds and then copies its input to its output
(``y``), so that a kill lands while a task runs, and each result is checked against its input. The kills wait
on conditions seen through the control API (a task's attempt running on a peer), never on fixed sleeps.
Each daemon is killed with its whole process group (its sandboxed workers too): no goodbye, no leave.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from p2pcompute import Client
from p2pcompute.node.client import ControlClient
from p2pcompute.node.devnet import Devnet

SPIN = 2_500_000_000           # loop turns: about 1.4 s on an idle core of this machine, longer when it is loaded
WAT = """
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 128) "x.tensor")
  (data (i32.const 144) "y")
  (func (export "_start")
    (local $i i64) (local $in i32) (local $n i32)
    (local.set $i (i64.const SPIN))
    (block $out (loop $l
      (br_if $out (i64.eqz (local.get $i)))
      (local.set $i (i64.sub (local.get $i) (i64.const 1)))
      (br $l)))
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 128) (i32.const 8) (i32.const 0)
              (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12))
      (then unreachable))
    (local.set $in (i32.load (i32.const 12)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 60000))
    (if (call $fd_read (local.get $in) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
    (local.set $n (i32.load (i32.const 8)))
    (if (call $path_open (i32.const 4) (i32.const 0) (i32.const 144) (i32.const 1) (i32.const 9)
              (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12))
      (then unreachable))
    (i32.store (i32.const 4) (local.get $n))
    (if (call $fd_write (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)) (then unreachable))
    (drop (call $fd_close (i32.load (i32.const 12))))
    (drop (call $fd_close (local.get $in)))))
""".replace("SPIN", str(SPIN))

JOB = """
name: spin
inputs:
  x: x/*.npy
stages:
  - name: s
    inputs: {x: inputs.x}
    map: {over: inputs.x}
    program: %s
    limits: {fuel: 100000000000}
    outputs: {formats: {y: raw}}
"""


def workspace(root: Path, n: int) -> list[np.ndarray]:
    (root / "x").mkdir(parents=True)
    arrays = [np.full((2, 3), i, dtype=np.float32) for i in range(n)]
    for i, a in enumerate(arrays):
        np.save(root / "x" / f"x{i}.npy", a)
    return arrays


def add_everywhere(net: Devnet, files: list[Path]) -> list[str]:
    """Add ``files`` on every peer (the same CIDs everywhere); their CIDs."""
    cids = []
    for peer in net.peers:
        api = ControlClient(peer.data_dir, timeout=30)
        cids = [api.request("POST", "/v1/add", content=f.read_bytes()).json()["cid"] for f in files]
        api.close()
    return cids


def job_file(root: Path, net: Devnet) -> Path:
    """The job, its program added on every peer (a local program cannot be submitted yet)."""
    (root / "spin.wat").write_text(WAT)
    (program,) = add_everywhere(net, [root / "spin.wat"])
    job = root / "job.yaml"
    job.write_text(JOB % f"ipfs://{program}")
    return job


def start(root: Path, n: int) -> tuple[Devnet, list[str]]:
    net = Devnet(root / "net", n, extra_args=["--cpus", "1"])
    try:
        net.start(timeout=90)
        assert net.wait_connected(60), "the devnet's peers did not all see each other"
    except BaseException:
        net.kill()
        raise
    ids = [p.status["peer_id"] for p in net.peers]
    return net, ids


def sigkill(net: Devnet, i: int) -> None:
    """SIGKILL peer ``i`` and its process group (the daemon and its executor's workers)."""
    os.killpg(net.peers[i].process.pid, signal.SIGKILL)
    net.peers[i].process.wait(10)


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def running_on(described: dict, peers: set[str]) -> str | None:
    """A peer of ``peers`` that runs a task of the job now (its attempt is open), if any."""
    for t in described["tasks"]:
        if t["state"] == "running":
            for a in t["attempts"]:
                if a["outcome"] == "running" and a["peer"] in peers:
                    return a["peer"]
    return None


def check_done(described: dict, arrays: list[np.ndarray], results: dict) -> None:
    """Each task done once: one accepted attempt each, no result taken twice; each result is its input."""
    assert described["state"] == "done", described["reason"]
    for t in described["tasks"]:
        assert t["state"] == "done"
        assert sum(a["outcome"] == "ok" for a in t["attempts"]) == 1, t["attempts"]
    assert described["stats"].get("duplicate_results", 0) == 0
    assert len(results) == len(arrays)
    for i, a in enumerate(arrays):
        got = results[(f"s/{i:05d}", f"y/{i:05d}")]
        np.testing.assert_array_equal(got, a)     # Job.results decodes tensors


def test_an_executing_daemon_sigkilled_mid_task_its_task_runs_elsewhere_and_the_job_completes(tmp_path):
    arrays = workspace(tmp_path, 3)
    net, ids = start(tmp_path, 3)
    try:
        client = Client(net.peers[0].data_dir)
        job = client.submit(job_file(tmp_path, net))
        victim_id = wait_for(lambda: running_on(job.describe(), set(ids[1:])), 60, "a task running on peer 1 or 2")
        victim = ids.index(victim_id)
        sigkill(net, victim)
        job.wait(timeout=120)
        described = job.describe()
        check_done(described, arrays, job.results())
        lost = [a for t in described["tasks"] for a in t["attempts"] if a["peer"] == victim_id]
        assert lost and all(a["outcome"] not in ("ok", "running") for a in lost), lost   # it never finished there
        moved = [t for t in described["tasks"] if any(a["peer"] == victim_id for a in t["attempts"])]
        assert all(next(a for a in t["attempts"] if a["outcome"] == "ok")["peer"] != victim_id for t in moved)
        assert described["stats"]["results_accepted"] == 3
        client.close()
    finally:
        net.stop()


def test_the_coordinator_daemon_sigkilled_mid_job_a_replica_finishes_it_and_another_peer_follows_it(tmp_path):
    """The submitter follows the job through another daemon: its describe finds the job at the heir (or a
    replica), waits to the end, and fetches the results there by CID."""
    arrays = workspace(tmp_path, 8)          # two rounds on four one-slot peers: the kill lands in the second
    net, ids = start(tmp_path, 4)
    try:
        add_everywhere(net, sorted((tmp_path / "x").iterdir()))  # the coordinator's copies of the inputs die with it
        job = Client(net.peers[0].data_dir).submit(job_file(tmp_path, net))

        def half_done():
            """A task done and another running; if we can, one done by the coordinator itself (a result only
            the coordinator holds: lost with it, so the heir runs that task again)."""
            d = job.describe()
            own = [t["task"] for t in d["tasks"] if t["state"] == "done"
                   and any(a["outcome"] == "ok" and a["peer"] == ids[0] for a in t["attempts"])]
            done = (d["progress"] or {}).get("done", 0)        # no progress before the first report is replicated
            # the tasks come from the state machine, the progress from the last replicated report: only once
            # every done task is replicated does the heir know the coordinator's own task was done
            replicated = done == sum(t["state"] == "done" for t in d["tasks"])
            ready = done >= 1 and replicated and running_on(d, set(ids)) and (own or done >= 4)
            return ready and (own or [None])

        own = wait_for(half_done, 90, "a task done and another running")[0]
        sigkill(net, 0)
        follower = Client(net.peers[1].data_dir)
        followed = follower.job(job.id)
        summary = followed.wait(timeout=120)
        assert summary["coordinator"] != ids[0] and summary["epoch"] >= 1
        described = followed.describe()
        check_done(described, arrays, followed.results())
        if own is not None:            # its result, fetched by the dead coordinator alone, was lost and made again
            attempts = next(t["attempts"] for t in described["tasks"] if t["task"] == own)
            assert [a["outcome"] for a in attempts if a["outcome"] in ("ok", "lost")] == ["lost", "ok"], attempts
            assert described["stats"]["results_lost"] >= 1
        # the command line, through a third peer
        from test_cli import run
        res = run("describe", job.id, "--json", "--data-dir", str(net.peers[2].data_dir))
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["state"] == "done"
        res = run("describe", "jnosuchjob", "--data-dir", str(net.peers[3].data_dir))
        assert res.returncode == 1 and "no job jnosuchjob" in res.stderr
        follower.close()
        # the submitting daemon comes back (its data dir, its identity): `jobs` still lists the job it
        # submitted, at the peer that took it over, done
        boot = next(a for a in net.peers[1].status["addresses"] if "/127.0.0.1/" in a)
        back = net._spawn(0, boot)
        net._wait_serving(back, time.monotonic() + 60)

        def listed_there():
            res = run("jobs", "--json", "--data-dir", str(back.data_dir))
            rows = [j for j in json.loads(res.stdout) if j["job_id"] == job.id] if res.returncode == 0 else []
            return rows and not rows[0].get("stale") and rows[0]["state"] == "done" and rows[0]
        row = wait_for(listed_there, 60, "the restarted submitter listing its job, found at the heir")
        assert row["moved"] and row["submitted_here"] and row["coordinator"] == summary["coordinator"]
    finally:
        net.stop()


async def test_a_daemon_holding_a_stale_record_asks_the_other_holder_learns_of_a_newer_line_and_does_not_take_over(
        tmp_path):
    """Two daemons, R and B, and a third peer X in this process (real libp2p, a member of their membership).
    Through the protocol (``JobRecordFull``) X gives R the epoch-0 record of a job and B the epoch-1 record of
    its heir, both naming R and B as the job's holders, R the closer to the job. X goes away: R, the job's
    successor in its own view, asks B for the newest line it knows (``LineQuery``), hears of epoch 1, and
    drops and fences its copy instead of taking the job over a second time."""
    import random

    import cbor2
    import trio

    from p2pcompute.gossip.service import MembershipService
    from p2pcompute.node.identity import Identity, PeerId
    from p2pcompute.node.libp2p_transport import Libp2pTransport
    from p2pcompute.node.messages import Resources
    from p2pcompute.node.node import Node
    from p2pcompute.scheduler.job_state import JobState
    from p2pcompute.scheduler.messages import JobRecordFull
    from p2pcompute.scheduler.replicas import closest
    from sm_harness import plan, task

    net, ids = await trio.to_thread.run_sync(start, tmp_path, 2)
    try:
        r_id, b_id = (PeerId.from_string(i) for i in ids)
        job_id = next(j for j in (f"jline{i}" for i in range(64)) if closest(j, [r_id, b_id])[0] == r_id)
        old = JobState(plan(task("a"), task("b"), job_id=job_id), 0.0, random.Random(1))
        old.start(0.0)
        heir = JobState.from_record(cbor2.loads(cbor2.dumps(old.to_record())), 5.0, random.Random(2))
        heir.start(5.0)
        holders = (str(r_id), str(b_id))

        def api(i: int, path: str):
            client = ControlClient(net.peers[i].data_dir, timeout=30)
            try:
                return client.request("GET", path)
            finally:
                client.close()

        async def until(cond, what: str, timeout: float = 60.0):
            with trio.fail_after(timeout):
                while not await trio.to_thread.run_sync(cond):
                    await trio.sleep(0.2)

        def sees_x_alive(i: int) -> bool:
            return any(p["peer_id"] == str(x.peer_id) and p["state"] == "alive" for p in api(i, "/v1/peers").json()["peers"])

        def scheduler(i: int) -> dict:
            return api(i, "/v1/status").json()["scheduler"]

        addr = next(a for a in net.peers[0].status["addresses"] if "/127.0.0.1/" in a).split("/p2p/")[0]
        x = Node(Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=3.0),
                 resources=Resources(1.0, 1 << 30, {}), bootstrap=[(r_id, [addr])], rng=random.Random(7),
                 services=[MembershipService(rng=random.Random(8))])
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def run_x(task_status=trio.TASK_STATUS_IGNORED):
                with scope:
                    await x.run(task_status=task_status)

            await nursery.start(run_x)
            await until(lambda: sees_x_alive(0) and sees_x_alive(1), "both daemons holding X alive")
            for peer, js in ((r_id, old), (b_id, heir)):
                reply = await x.transport.request(peer, JobRecordFull(job_id, cbor2.dumps(js.to_record()), holders),
                                                  30)
                assert reply.ok, reply.reason
            assert (await trio.to_thread.run_sync(scheduler, 0))["replicas_held"] == 1
            scope.cancel()                                  # X goes away: R is the heir of the copy it holds
        def settled() -> bool:                                 # R averted the takeover, or (wrongly) made it
            s = scheduler(0)
            return s.get("takeovers_averted", 0) + s["takeovers"] >= 1

        await until(settled, "R's takeover averted or made", 90)
        r, b = scheduler(0), scheduler(1)
        assert r["takeovers_averted"] == 1 and r["takeovers"] == 0 and r["replicas_held"] == 0, r
        assert b["takeovers"] == 0 and b["replicas_held"] == 1, b   # B was not the heir: it keeps its copy
        metrics = (await trio.to_thread.run_sync(api, 0, "/metrics")).text
        assert "p2pcompute_scheduler_takeovers_averted_total 1.0" in metrics
        assert "p2pcompute_scheduler_takeovers_total 0.0" in metrics
        b_metrics = (await trio.to_thread.run_sync(api, 1, "/metrics")).text
        assert 'p2pcompute_messages_received_total{type="LineQuery"} 1.0' in b_metrics
        # and the job is still found through R: at B, which holds the newer line
        described = (await trio.to_thread.run_sync(api, 0, f"/v1/jobs/{job_id}")).json()
        assert described["epoch"] == 1 and described["source"] == "replica", described
    finally:
        await trio.to_thread.run_sync(net.stop)


if __name__ == "__main__":
    pytest.main([__file__, "-x", "-q"])
