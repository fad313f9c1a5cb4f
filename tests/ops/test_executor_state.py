"""The executor's pure state machine: dispatch, deadlines, limits, retries, recycling, shutdown."""

from __future__ import annotations

import signal

from p2pcompute.ops import executor_state as es


def started(cpus: int = 2, **kw) -> es.ExecutorState:
    """All ``cpus`` workers started and ready (as warm spares)."""
    state = es.ExecutorState(cpus=cpus, warm=kw.pop("warm", cpus), **kw)
    starts = state.open(0.0)
    assert starts == [es.StartWorker(i) for i in range(cpus)]
    for cmd in starts:
        state.worker_ready(cmd.wid, 0.1)
    return state


def test_tasks_queue_fifo_and_run_one_per_worker():
    state = started(cpus=2)
    sends = [c for tid in (1, 2, 3) for c in state.submit(tid, 10, 5, 1.0)]
    assert [type(c) for c in sends] == [es.SendTask, es.SendTask]
    assert {c.tid for c in sends} == {1, 2}
    busy = next(c.wid for c in sends if c.tid == 1)
    out = state.task_finished(busy, recycle=False, now=2.0)
    assert out == [es.Deliver(1, "reply"), es.SendTask(busy, 3)]


def test_queue_is_bounded():
    state = started(cpus=1, max_queue=2)
    state.submit(1, 10, 5, 0)  # runs
    assert state.submit(2, 10, 5, 0) == [] and state.submit(3, 10, 5, 0) == []
    [reject] = state.submit(4, 10, 5, 0)
    assert reject.verdict == "rejected" and "queue full" in reject.message


def test_wall_deadline_kills_and_reports_the_figure_then_replaces_the_worker():
    state = started(cpus=1)
    [send] = state.submit(7, 2.5, 60, 1.0)
    assert state.next_deadline() == 3.5
    assert state.tick(3.4) == []
    assert state.tick(3.5) == [es.KillWorker(send.wid)]
    assert state.tick(3.6) == []  # killed once
    out = state.worker_exited(send.wid, signal.SIGKILL, 3.7)
    assert out[0] == es.Deliver(7, "resource_exceeded", "wall_time", 2.5,
                                "killed after the 2.5 s wall-clock limit", 1)
    assert isinstance(out[1], es.StartWorker) and out[1].wid != send.wid


def test_sigxcpu_is_the_cpu_limit():
    state = started(cpus=1)
    [send] = state.submit(1, 60, 1.5, 0)
    [deliver, restart] = state.worker_exited(send.wid, signal.SIGXCPU, 2.0)
    assert (deliver.verdict, deliver.resource, deliver.limit) == ("resource_exceeded", "cpu_time", 1.5)
    assert isinstance(restart, es.StartWorker)


def test_crash_retries_on_a_new_worker_then_fails():
    state = started(cpus=1, max_attempts=2)
    [send] = state.submit(1, 60, 60, 0)
    out = state.worker_exited(send.wid, signal.SIGSEGV, 1.0)
    assert out == [es.StartWorker(1)]  # task requeued, nothing delivered yet
    [resend] = state.worker_ready(1, 1.5)
    assert resend == es.SendTask(1, 1)
    [fail, _restart] = state.worker_exited(1, signal.SIGSEGV, 2.0)
    assert fail.verdict == "failed" and fail.attempts == 2 and "signal 11" in fail.message


def test_recycle_on_request_and_after_n_tasks():
    state = started(cpus=1, recycle_after=2)
    [s1] = state.submit(1, 60, 60, 0)
    assert state.task_finished(s1.wid, recycle=True, now=1) == [es.Deliver(1, "reply"), es.StopWorker(0)]
    assert state.worker_exited(0, None, 1.1) == [es.StartWorker(1)]
    state.worker_ready(1, 1.2)
    for tid in (2, 3):
        [s] = state.submit(tid, 60, 60, 2)
        out = state.task_finished(s.wid, recycle=False, now=3)
    assert out == [es.Deliver(3, "reply"), es.StopWorker(1)]


def test_workers_that_never_start_fail_waiting_tasks_instead_of_hanging():
    state = es.ExecutorState(cpus=1, max_start_failures=3)
    state.open(0)
    state.submit(1, 60, 60, 0)
    assert state.worker_exited(0, None, 1) == [es.StartWorker(1)]
    assert state.worker_exited(1, None, 2) == [es.StartWorker(2)]
    [fail] = state.worker_exited(2, None, 3)
    assert fail.tid == 1 and fail.verdict == "failed" and "fail to start" in fail.message
    assert state.workers == {}  # no restart loop
    out = state.submit(2, 60, 60, 4)
    assert out == [es.StartWorker(3)]  # one more attempt for the new task


def test_start_timeout_kills_a_hung_worker():
    state = es.ExecutorState(cpus=1, start_timeout=5)
    state.open(0)
    assert state.tick(4.9) == [] and state.tick(5.0) == [es.KillWorker(0)]


def test_cancel_queued_and_running_tasks():
    state = started(cpus=1)
    [send] = state.submit(1, 60, 60, 0)
    state.submit(2, 60, 60, 0)
    assert state.cancel(2, 1) == []
    assert state.cancel(1, 1) == [es.KillWorker(send.wid)]
    assert state.worker_exited(send.wid, signal.SIGKILL, 2) == [es.StartWorker(1)]  # nothing delivered


def test_close_rejects_waiting_stops_idle_and_finishes():
    state = started(cpus=2)
    [send] = state.submit(1, 60, 60, 0)
    state.submit(2, 60, 60, 0)
    state.submit(3, 60, 60, 0)
    out = state.close(1)
    assert es.Deliver(3, "rejected", message="the executor is shutting down", attempts=0) in out
    assert state.submit(4, 60, 60, 1)[0].verdict == "rejected"
    others = [c for c in out if isinstance(c, es.StopWorker)]
    assert others == []  # both workers are busy; they stop when done
    assert state.task_finished(send.wid, False, 2) == [es.Deliver(send.tid, "reply"), es.StopWorker(send.wid)]
    state.worker_exited(send.wid, None, 3)
    assert not state.finished()
    other = next(iter(state.workers))
    state.task_finished(other, False, 4)
    assert state.worker_exited(other, None, 5) == [] and state.finished()


def test_workers_start_on_demand_up_to_the_slots_and_one_stays_warm():
    state = es.ExecutorState(cpus=512, warm=1)
    assert state.open(0) == [es.StartWorker(0)]  # one warm worker, not one per slot
    assert state.worker_ready(0, 0.5) == []
    [send, spare] = state.submit(1, 60, 60, 1)
    assert send == es.SendTask(0, 1) and spare == es.StartWorker(1)  # a new spare while 0 works
    out = [c for tid in (2, 3, 4) for c in state.submit(tid, 60, 60, 2)]
    assert out == [es.StartWorker(2), es.StartWorker(3), es.StartWorker(4)]  # one per waiting task
    assert state.counts() | {"slots": 0} == {"slots": 0, "workers": 5, "queued": 3, "starting": 4,
                                             "idle": 0, "busy": 1, "leaving": 0}
    assert state.worker_ready(1, 3) == [es.SendTask(1, 2)]


def test_the_pool_never_exceeds_its_slots():
    state = es.ExecutorState(cpus=2, warm=1)
    state.open(0)
    state.worker_ready(0, 0)
    out = [c for tid in range(1, 6) for c in state.submit(tid, 60, 60, 1)]
    assert [type(c) for c in out] == [es.SendTask, es.StartWorker]
    assert len(state.workers) == 2 and len(state.queue) == 4


def test_spare_workers_leave_after_their_idle_timeout_but_the_warm_one_stays():
    state = es.ExecutorState(cpus=4, warm=1, idle_timeout=30)
    state.open(0)
    state.worker_ready(0, 0)
    sends = [c for tid in (1, 2, 3) for c in state.submit(tid, 60, 60, 1) if isinstance(c, es.SendTask)]
    for wid in (1, 2, 3):
        sends += [c for c in state.worker_ready(wid, 2) if isinstance(c, es.SendTask)]
    assert len(sends) == 3  # three busy, one spare (idle since 2)
    for send in sends:
        state.task_finished(send.wid, False, 10)
    assert state.next_deadline() == 32
    assert state.tick(31.9) == []
    assert state.tick(32) == [es.StopWorker(3)]  # four idle, one wanted
    stops = state.tick(40)
    assert len(stops) == 2 and all(isinstance(c, es.StopWorker) for c in stops)
    for stop in [es.StopWorker(3), *stops]:
        assert state.worker_exited(stop.wid, None, 41) == []  # no replacement: not wanted
    assert len(state.workers) == 1 and state.next_deadline() is None  # the warm one stays
    assert state.tick(10_000) == []
