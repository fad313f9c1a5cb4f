"""The scheduler's control-API routes (a mixin of ``SchedulerService``, service.py).

    POST /v1/jobs              {"job": "<job.yaml text>", "base": "/abs/dir"} or {"path": "/abs/job.yaml"}
                               -> the job's summary and its task count (submit.py resolves and plans)
    GET  /v1/jobs              {"jobs": [summary, ...]} of the jobs coordinated here and of those submitted
                               through here that another peer coordinates now (``moved``: looked up there,
                               submitted.py); ``?state=running``: only those in it; ``?all=1``: also the
                               jobs the live members coordinate (JobList, bounded: job_lookup.py), and
                               ``peers_asked``, ``peers_answered``, ``more`` (jobs past the bounds)
    GET  /v1/jobs/{id}         the summary, every task's state, attempts (peer, times, outcome, message, log)
                               and story, the job's counters, where its inputs came from (``inputs``), and
                               ``created`` and ``clock``: the coordinator's clock then and now, which the
                               attempts' ``start`` and ``end`` are on
                               (a job coordinated elsewhere is looked up at its coordinator or replicas:
                               job_lookup.py)
    POST /v1/jobs/cancel/{id}  {"reason": "..."} (optional) -> the summary; a job coordinated elsewhere is
                               cancelled at its coordinator (JobCancel over libp2p), which allows it only
                               from the peer the job was submitted through (403 otherwise: job_lookup.py)
    GET  /v1/jobs/logs/{id}    ?task=T (optional; else up to ``limit`` tasks that ran, default 100): per task,
                               each attempt's peer, outcome and stderr (task_logs.py: fetched by CID from the
                               peer that ran it; ``stderr`` null with ``log_error`` when it cannot be had);
                               a job coordinated elsewhere: its attempts from the lookup's summary

A summary shows the last report carried out (replicated), not the state
machine's newest state. (``/v1/jobs/{id}/cancel`` would need a route pattern
the API's router does not have: a parameter only as the last segment.)
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import trio

from ..errors import P2PComputeError
from ..node.api import HttpError, json_response, parse_json_body
from . import task_logs
from .submitted import FILE as SUBMITTED_FILE
from .submitted import Submitted, listed

JOB_STATES = ("submitted", "running", "done", "failed", "cancelled")
MAX_LOG_TASKS = 1000
LOG_FETCH_S = 10.0              # at most this long without a block of a log


class JobsApiMixin:
    node: Any
    config: Any
    jobs: dict
    _fence: Any          # replication.py

    def _evict_finished(self) -> None:
        """Past ``max_jobs``, the oldest finished jobs are forgotten (their results stay pinned)."""
        if len(self.jobs) < self.config.max_jobs:
            return
        for job_id in sorted((j for j, x in self.jobs.items() if x.done.is_set()),
                             key=lambda j: self.jobs[j].submitted)[: max(1, len(self.jobs) // 10)]:
            js = self.jobs.pop(job_id).js
            self._fence(job_id, (js.epoch, js.nonce))      # its line is still known here (LineQuery, fencing)

    async def _api_submit(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        from .submit import plan_from_request

        request = parse_json_body(body)
        plan = await plan_from_request(request, self.node.services["storage"], "j" + uuid.uuid4().hex[:20],
                                       self._announce_soon, node=self.node)
        plan = replace(plan, submitter=str(self.node.peer_id))     # the peer that may cancel it from elsewhere
        job_id = await self.submit(plan)
        summary = self.summary(job_id)
        self._submitted().add(summary)
        self._save_submitted()
        return json_response(summary | {"tasks": len(plan.tasks)})

    def _submitted(self) -> Submitted:
        """The jobs submitted through this peer (submitted.py), loaded from the data dir the first time."""
        s = self.__dict__.get("_submitted_here")
        if s is None:
            data_dir = getattr(self.node, "data_dir", None)
            s = Submitted(data_dir / SUBMITTED_FILE if data_dir is not None else None)
            s.load()
            self.__dict__["_submitted_here"] = s
        return s

    def _save_submitted(self) -> None:
        """Saved in the background within a second (one save for a burst of submissions)."""
        nursery = getattr(self, "_nursery", None)
        if nursery is None:
            self._submitted().save()
            return
        if self.__dict__.get("_saving"):
            return
        self.__dict__["_saving"] = True

        async def later() -> None:
            try:
                await trio.sleep(1.0)
            finally:
                self.__dict__["_saving"] = False
            await trio.to_thread.run_sync(self._submitted().save)

        nursery.start_soon(later)

    async def _api_list(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        state = query.get("state")
        if state is not None and state not in JOB_STATES:
            raise HttpError(400, f"state {state[:40]!r} is not one of {', '.join(JOB_STATES)}")
        submitted = self._submitted()
        jobs = []
        for j in list(self.jobs):
            summary = self.summary(j)
            if j in submitted.jobs:
                submitted.seen(summary)
                summary = summary | {"submitted_here": True}
            jobs.append(summary)
        jobs += await self._moved_jobs(submitted)
        self._save_submitted()
        out: dict[str, Any] = {}
        if query.get("all") not in (None, "", "0", "false"):
            known = {j["job_id"] for j in jobs}
            others, out = await self._network_jobs(state or "")
            jobs += [j for j in others if j["job_id"] not in known]
        return json_response({"jobs": [j for j in jobs if state is None or j["state"] == state]} | out)

    async def _moved_jobs(self, submitted: Submitted) -> list[dict[str, Any]]:
        """The jobs submitted here that another peer coordinates now: the newest unfinished ones looked up
        (at most ``submitted.MAX_LOOKUPS``, 8 at once), the others as last seen."""
        found: dict[str, dict] = {}
        limiter = trio.CapacityLimiter(8)

        async def look(job_id: str) -> None:
            async with limiter:
                summary = await self._find_job(job_id)
            if summary is not None:
                found[job_id] = summary
                submitted.seen(summary)

        asked = submitted.to_look_up(self.jobs)
        async with trio.open_nursery() as nursery:
            for job_id in asked:
                nursery.start_soon(look, job_id)
        return [listed(found.get(j) or submitted.jobs[j], moved=True, stale=j in asked and j not in found)
                for j in submitted.moved(self.jobs)]

    async def _api_describe(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        job_id = query.get("id", "")
        if job_id in self.jobs:
            return json_response(self._described(job_id))
        found = await self._find_job(job_id) if 0 < len(job_id) <= 128 else None
        if found is None:
            raise HttpError(404, f"no job {job_id[:128]} is coordinated here, nor known to its replicas")
        return json_response(_jsonable(found))

    def _described(self, job_id: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        inputs = [{"input": i, "from": k, "source": s, "cid": c} for i, k, s, c in job.js.plan.sources]
        return self.summary(job_id) | {"source": "coordinator", "tasks": _jsonable(job.js.describe()),
                                       "stats": dict(job.js.stats), "inputs": inputs,
                                       "created": job.js.created, "clock": trio.current_time()}

    async def _api_cancel(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        job_id = query.get("id", "")
        reason = str(parse_json_body(body).get("reason", "cancelled by the user"))[:512]
        if job_id in self.jobs:
            await self.cancel(job_id, reason)
            return json_response(self.summary(job_id))
        found = await self._find_job(job_id) if 0 < len(job_id) <= 128 else None
        if found is None:
            raise HttpError(404, f"no job {job_id[:128]} is coordinated here, nor known to its replicas")
        if found["state"] in ("done", "failed", "cancelled"):
            return json_response(_jsonable(_no_tasks(found)))      # nothing left to cancel
        status, why = await self._forward_cancel(job_id, found, reason)
        if status != 200:
            raise HttpError(status, why)
        again = await self._find_job(job_id)
        return json_response(_jsonable(_no_tasks(again or found)))

    async def _api_logs(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        job_id, task = query.get("id", ""), query.get("task")
        try:
            limit = int(query.get("limit", 100))
        except ValueError:
            raise HttpError(400, "limit must be an integer") from None
        if not 0 < limit <= MAX_LOG_TASKS:
            raise HttpError(400, f"limit must be 1 to {MAX_LOG_TASKS}")
        if job_id in self.jobs:
            runs: dict[str, Any] = self.jobs[job_id].js.tasks

            def row(tid: str) -> dict[str, Any]:
                t = runs[tid]
                return _log_row(tid, t.state, t.reason, t.attempts_dropped, t.attempts)

            ran = [tid for tid, t in runs.items() if t.attempts] if task is None else []
        else:          # coordinated elsewhere: the attempts (and their log CIDs) from its summary
            found = await self._find_job(job_id) if 0 < len(job_id) <= 128 else None
            if found is None:
                raise HttpError(404, f"no job {job_id[:128]} is coordinated here, nor known to its replicas")
            if not isinstance(found.get("tasks"), list):
                raise HttpError(502, f"job {job_id}'s task list is too large to come through another peer: "
                                f"ask on its coordinator {str(found.get('coordinator'))[:64]}")
            runs = {t["task"]: t for t in found["tasks"] if isinstance(t, dict) and isinstance(t.get("task"), str)}

            def row(tid: str) -> dict[str, Any]:
                t = runs[tid]
                return _log_row(tid, t.get("state"), t.get("reason"), t.get("attempts_dropped"),
                                t.get("attempts") if isinstance(t.get("attempts"), list) else [])

            ran = [tid for tid, t in runs.items() if t.get("attempts")] if task is None else []
        if task is not None and task not in runs:
            raise HttpError(404, f"job {job_id} has no task {task[:128]}")
        chosen = [row(task)] if task is not None else [row(tid) for tid in ran[:limit]]
        shown = chosen
        storage = self.node.services["storage"]
        limiter = trio.CapacityLimiter(8)
        timeout = min(self.config.fetch_timeout_s, LOG_FETCH_S)

        async def read(a: dict) -> None:
            async with limiter:
                try:
                    a["stderr"] = await task_logs.read(storage, a["log"], timeout)
                except P2PComputeError as exc:
                    a["stderr"], a["log_error"] = None, f"log {a['log']} not to be had: {exc}"

        async with trio.open_nursery() as nursery:
            for t in shown:
                for a in t["attempts"]:
                    if a.get("log"):
                        nursery.start_soon(read, a)
                    else:
                        a["stderr"] = ""
        return json_response({"job_id": job_id, "tasks": shown,
                              "tasks_not_shown": len(ran) - len(chosen) if task is None else 0})


def _log_row(task: str, state: Any, reason: Any, dropped: Any, attempts: list) -> dict[str, Any]:
    dropped = dropped if type(dropped) is int else 0
    return {"task": task, "state": state, "reason": reason, "attempts_dropped": dropped,
            "attempts": [{"attempt": dropped + n + 1} | _jsonable(a) for n, a in enumerate(attempts)
                         if isinstance(a, dict)]}


def _no_tasks(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("tasks", "stats")}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
