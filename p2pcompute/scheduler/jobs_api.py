"""The scheduler's control-API routes (a mixin of ``SchedulerService``, service.py).

    POST /v1/jobs              {"job": "<job.yaml text>", "base": "/abs/dir"} or {"path": "/abs/job.yaml"}
                               -> the job's summary and its task count (submit.py resolves and plans)
    GET  /v1/jobs              {"jobs": [summary, ...]} of the jobs coordinated here
    GET  /v1/jobs/{id}         the summary, every task's state, attempts and story, the job's counters;
                               a job coordinated elsewhere is looked up at its coordinator or replicas
                               (job_lookup.py)
    POST /v1/jobs/cancel/{id}  {"reason": "..."} (optional) -> the summary

A summary shows the last report carried out (replicated), not the state
machine's newest state. (``/v1/jobs/{id}/cancel`` would need a route pattern
the API's router does not have: a parameter only as the last segment.)
"""

from __future__ import annotations

import uuid
from typing import Any

from ..node.api import HttpError, json_response, parse_json_body


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
        plan = await plan_from_request(request, self.node.services["storage"], "j" + uuid.uuid4().hex[:20])
        job_id = await self.submit(plan)
        return json_response(self.summary(job_id) | {"tasks": len(plan.tasks)})

    async def _api_list(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        return json_response({"jobs": [self.summary(j) for j in self.jobs]})

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
        return self.summary(job_id) | {"source": "coordinator", "tasks": _jsonable(job.js.describe()),
                                       "stats": dict(job.js.stats)}

    async def _api_cancel(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        job_id = query.get("id", "")
        if job_id not in self.jobs:
            raise HttpError(404, f"no job {job_id[:128]} is coordinated here")
        reason = parse_json_body(body).get("reason", "cancelled by the user")
        await self.cancel(job_id, str(reason))
        return json_response(self.summary(job_id))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
