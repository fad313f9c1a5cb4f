"""The scheduler's control-API routes (a mixin of ``SchedulerService``, service.py).

    POST /v1/jobs              {"job": "<job.yaml text>", "base": "/abs/dir"} or {"path": "/abs/job.yaml"}
                               -> the job's summary and its task count (submit.py resolves and plans)
    GET  /v1/jobs              {"jobs": [summary, ...]} of the jobs coordinated here (``?state=running``: in it)
    GET  /v1/jobs/{id}         the summary, every task's state, attempts (peer, times, outcome, message, log)
                               and story, the job's counters, where its inputs came from (``inputs``), and
                               ``created`` and ``clock``: the coordinator's clock then and now, which the
                               attempts' ``start`` and ``end`` are on
    POST /v1/jobs/cancel/{id}  {"reason": "..."} (optional) -> the summary
    GET  /v1/jobs/logs/{id}    ?task=T (optional; else up to ``limit`` tasks that ran, default 100): per task,
                               each attempt's peer, outcome and stderr (task_logs.py: fetched by CID from the
                               peer that ran it; ``stderr`` null with ``log_error`` when it cannot be had)

A summary shows the last report carried out (replicated), not the state
machine's newest state. (``/v1/jobs/{id}/cancel`` would need a route pattern
the API's router does not have: a parameter only as the last segment.)
"""

from __future__ import annotations

import uuid
from typing import Any

import trio

from ..errors import P2PComputeError
from ..node.api import HttpError, json_response, parse_json_body
from . import task_logs

JOB_STATES = ("submitted", "running", "done", "failed", "cancelled")
MAX_LOG_TASKS = 1000
LOG_FETCH_S = 10.0              # at most this long without a block of a log


class JobsApiMixin:
    node: Any
    config: Any
    jobs: dict

    def _evict_finished(self) -> None:
        """Past ``max_jobs``, the oldest finished jobs are forgotten (their results stay pinned)."""
        if len(self.jobs) < self.config.max_jobs:
            return
        for job_id in sorted((j for j, x in self.jobs.items() if x.done.is_set()),
                             key=lambda j: self.jobs[j].submitted)[: max(1, len(self.jobs) // 10)]:
            del self.jobs[job_id]

    async def _api_submit(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        from .submit import plan_from_request

        request = parse_json_body(body)
        plan = await plan_from_request(request, self.node.services["storage"], "j" + uuid.uuid4().hex[:20],
                                       node=self.node)
        job_id = await self.submit(plan)
        return json_response(self.summary(job_id) | {"tasks": len(plan.tasks)})

    async def _api_list(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        state = query.get("state")
        if state is not None and state not in JOB_STATES:
            raise HttpError(400, f"state {state[:40]!r} is not one of {', '.join(JOB_STATES)}")
        jobs = [self.summary(j) for j in self.jobs]
        return json_response({"jobs": [j for j in jobs if state is None or j["state"] == state]})

    async def _api_describe(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        job_id = query.get("id", "")
        if job_id not in self.jobs:
            raise HttpError(404, f"no job {job_id[:128]} is coordinated here")
        job = self.jobs[job_id]
        inputs = [{"input": i, "from": k, "source": s, "cid": c} for i, k, s, c in job.js.plan.sources]
        return json_response(self.summary(job_id) | {"tasks": _jsonable(job.js.describe()),
                                                     "stats": dict(job.js.stats), "inputs": inputs,
                                                     "created": job.js.created, "clock": trio.current_time()})

    async def _api_cancel(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        job_id = query.get("id", "")
        if job_id not in self.jobs:
            raise HttpError(404, f"no job {job_id[:128]} is coordinated here")
        reason = parse_json_body(body).get("reason", "cancelled by the user")
        await self.cancel(job_id, str(reason))
        return json_response(self.summary(job_id))

    async def _api_logs(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        job_id, task = query.get("id", ""), query.get("task")
        if job_id not in self.jobs:
            raise HttpError(404, f"no job {job_id[:128]} is coordinated here")
        try:
            limit = int(query.get("limit", 100))
        except ValueError:
            raise HttpError(400, "limit must be an integer") from None
        if not 0 < limit <= MAX_LOG_TASKS:
            raise HttpError(400, f"limit must be 1 to {MAX_LOG_TASKS}")
        tasks = self.jobs[job_id].js.tasks
        if task is not None:
            if task not in tasks:
                raise HttpError(404, f"job {job_id} has no task {task[:128]}")
            chosen = [tasks[task]]
        else:
            ran = [t for t in tasks.values() if t.attempts]
            chosen = ran[:limit]
        shown = [{"task": t.task_id, "state": t.state, "reason": t.reason, "attempts_dropped": t.attempts_dropped,
                  "attempts": [{"attempt": t.attempts_dropped + n + 1} | _jsonable(a)
                               for n, a in enumerate(t.attempts)]} for t in chosen]
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
                              "tasks_not_shown": 0 if task is not None else len(ran) - len(chosen)})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
