"""Following a job through any peer (a mixin of ``SchedulerService``, service.py).

Theory of operation. ``GET /v1/jobs/{id}`` on a peer that does not
coordinate the job finds it (``_find_job``): if this peer holds a replica of
its record, it asks the coordinator the record names (fresher) and falls
back on its own copy; otherwise it asks the ``K + 1`` live members closest
to the job id (where its replicas live, and its coordinator after a
takeover) with ``JobQuery`` (415). Each answers ``JobInfo`` (416): the
summary it has as coordinator, or the one built from its replica's record
(``record_summary``), without its task list (and then its outputs) if it
would not fit in a message (``left_out`` names what is missing). A
coordinator's answer wins; else the copy of the highest epoch and version. Nobody forwards a query further: a lookup is at
most ``K + 2`` requests. So a submitter whose coordinator died follows the
job, through any live peer, to its end under the new coordinator, and
fetches its results by CID (the client asks its daemon to fetch them).
A summary built from a record shows the replicated state, which is never
behind what the coordinator has reported.

The same lookup serves ``logs`` (the attempts' log CIDs come with the task
list) and ``results`` (the output CIDs: the client asks its daemon to fetch
them). ``cancel`` through a peer that does not coordinate the job finds the
coordinator so and sends it ``JobCancel`` (417) over libp2p. Who may cancel
(``may_cancel``, pure): the peer the job was submitted through (recorded in
its plan, so it holds after a takeover) and the coordinator itself (its own
control API); anybody else is refused with the reason, and the API answers
403. A coordinator answers only for the jobs it coordinates: nobody forwards.

``jobs --all`` (``_network_jobs``) asks the live members, at most
``MAX_LIST_PEERS`` of them and 16 at once, for the jobs they coordinate
(``JobList`` 418, answered by ``JobListing`` 419: at most ``limit``
summaries without tasks, newest first, and how many more there were).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import cbor2
import trio

from ..node.identity import PeerId
from .messages import JobCancel, JobInfo, JobList, JobListing, JobQuery, SchedAck
from .model import JobPlan
from .replicas import closest

log = logging.getLogger("p2pcompute.scheduler.service")
MAX_SUMMARY_BYTES = 900 << 10      # a JobInfo stays under the 1 MiB message limit: past it, no task list
QUEUED = ("waiting", "ready", "placing", "offered")
FINAL = ("done", "failed", "cancelled")
MAX_LIST_PEERS = 64                 # members asked by ``jobs --all``
LIST_PER_PEER = 100                 # jobs each of them lists
MAX_LISTING_BYTES = 900 << 10


def may_cancel(submitter: str, asker: str, coordinator: str) -> bool:
    """Whether ``asker`` may cancel a job submitted through ``submitter`` that ``coordinator`` runs: the
    submitting peer (its user submitted it), or the coordinator itself. A plan of before the submitter was
    recorded ("") is cancelled only at its coordinator."""
    return asker == coordinator or (bool(submitter) and asker == submitter)


def record_summary(record: dict, coordinator: str, replicas: tuple = (), tasks: bool = True) -> dict[str, Any]:
    """A job's summary (and its tasks) from a replica's copy of its record (checked when it was received)."""
    plan = JobPlan.from_wire(record["plan"])
    rows = record["tasks"]
    counts = Counter(t["state"] for t in rows)
    progress = {"done": counts["done"], "running": counts["running"] + counts["fetching"],
                "queued": sum(counts[s] for s in QUEUED), "failed": counts["failed"], "skipped": counts["skipped"],
                "cancelled": counts["cancelled"], "total": len(rows)}
    by_id = {t["id"]: t for t in rows}
    out = {"job_id": record["job_id"], "name": plan.name, "coordinator": coordinator,
           "state": record["state"], "reason": record["reason"], "progress": progress, "epoch": record["epoch"],
           "version": record["version"], "replicas": [str(p) for p in replicas],
           "outputs": [[tid, name, by_id[tid]["outputs"].get(name)] for tid, name in plan.outputs],
           "source": "replica"}
    if tasks:
        stages = {t.task_id: t.stage for t in plan.tasks}
        out["tasks"] = [{"task": t["id"], "stage": stages.get(t["id"], ""), "state": t["state"],
                         "reason": t["reason"], "attempts": [dict(a) for a in t["attempts"]],
                         "attempts_dropped": t["attempts_dropped"], "outputs": dict(t["outputs"]), "story": []}
                        for t in rows]
        out["stats"] = dict(record.get("stats", {}))
    return out


class JobLookupMixin:
    """Needs of the service: node, config, jobs, held, _live, _described (jobs_api.py)."""

    node: Any
    config: Any
    jobs: dict
    held: dict

    def _local_summary(self, job_id: str) -> tuple[str, dict] | None:
        """(source, summary with tasks) of what this peer knows of the job itself, or None."""
        if job_id in self.jobs:
            return "coordinator", self._described(job_id)
        held = self.held.get(job_id)
        if held is not None:
            try:
                return "replica", record_summary(held.record, str(held.coordinator), held.replicas)
            except Exception as exc:     # a record checked on receipt: a bug if this happens, never fatal
                log.warning("cannot summarise the record of %s held here: %s", job_id, exc)
        return None

    async def _on_job_query(self, peer: PeerId, msg: JobQuery) -> JobInfo:
        found = self._local_summary(msg.job_id)
        if found is None:
            return JobInfo(False)
        source, summary = found
        data = cbor2.dumps(summary)
        for drop in (("tasks", "stats"), ("tasks", "stats", "outputs")):   # too large for a message: less
            if len(data) <= MAX_SUMMARY_BYTES:
                break
            data = cbor2.dumps({k: v for k, v in summary.items() if k not in drop} | {"left_out": list(drop)})
        return JobInfo(True, source, data) if len(data) <= MAX_SUMMARY_BYTES else JobInfo(False)

    async def _query(self, peer: PeerId, job_id: str) -> tuple[str, dict] | None:
        try:
            reply = await self.node.transport.request(peer, JobQuery(job_id), self.config.request_timeout_s)
            if not isinstance(reply, JobInfo) or not reply.found:
                return None
            summary = cbor2.loads(reply.summary)
            if not isinstance(summary, dict) or summary.get("job_id") != job_id or "state" not in summary:
                return None
            return reply.source, summary
        except Exception as exc:     # unreachable, a timeout, or garbage from the peer: it does not know
            log.debug("job query of %s to %s: %s", job_id, peer.short, exc)
            return None

    async def _find_job(self, job_id: str) -> dict[str, Any] | None:
        """The summary of a job this peer does not coordinate: from its coordinator or a replica (None: unknown)."""
        me = self.node.peer_id
        live = self._live() - {me}
        held = self.held.get(job_id)
        if held is not None:
            if held.coordinator != me and held.coordinator in live:
                answer = await self._query(held.coordinator, job_id)
                if answer is not None and answer[0] == "coordinator":
                    return answer[1]
            local = self._local_summary(job_id)
            return local[1] if local else None
        answers: list[tuple[str, dict]] = []
        peers = closest(job_id, live, self.config.replicas + 1)
        async with trio.open_nursery() as nursery:
            async def ask(p: PeerId) -> None:
                answer = await self._query(p, job_id)
                if answer is not None:
                    answers.append(answer)
            for p in peers:
                nursery.start_soon(ask, p)
        chosen = best_answer(answers)
        if chosen is None or chosen[0] == "coordinator":
            return chosen[1] if chosen else None
        best = chosen[1]
        coordinator = best.get("coordinator")
        try:
            peer = PeerId.from_string(coordinator) if isinstance(coordinator, str) else None
        except Exception:
            peer = None
        if peer is not None and peer in live and peer not in peers:
            answer = await self._query(peer, job_id)
            if answer is not None and answer[0] == "coordinator":
                return answer[1]
        return best


    async def _on_job_cancel(self, peer: PeerId, msg: JobCancel) -> SchedAck:
        job = self.jobs.get(msg.job_id)
        if job is None:
            return SchedAck(False, f"no job {msg.job_id[:128]} is coordinated here")
        submitter = job.js.plan.submitter
        if not may_cancel(submitter, str(peer), str(self.node.peer_id)):
            return SchedAck(False, f"not allowed: only the peer job {msg.job_id} was submitted through "
                                   f"({submitter[:20] or 'not recorded'}) or its coordinator may cancel it")
        log.info("job %s: cancel asked by %s (the peer it was submitted through)", msg.job_id, peer.short)
        await self.cancel(msg.job_id, msg.reason or f"cancelled through peer {peer.short}")
        return SchedAck(True)

    async def _forward_cancel(self, job_id: str, found: dict, reason: str) -> tuple[int, str]:
        """Send the cancel of a job coordinated elsewhere to its coordinator: (HTTP status, why not)."""
        coordinator = found.get("coordinator")
        try:
            peer = PeerId.from_string(coordinator) if isinstance(coordinator, str) else None
        except Exception:
            peer = None
        if peer is None or peer == self.node.peer_id:
            return 503, f"job {job_id} has no coordinator to cancel it now: try again in a moment"
        if found.get("source") != "coordinator" and peer not in self._live():
            return 503, (f"job {job_id}'s coordinator {peer.short} is gone and no replica has taken it over yet: "
                         "try again in a moment")
        try:
            reply = await self.node.transport.request(peer, JobCancel(job_id, reason[:512]),
                                                      self.config.request_timeout_s)
        except Exception as exc:     # unreachable, a timeout, or garbage
            return 503, f"job {job_id}'s coordinator {peer.short} cannot be reached: {str(exc)[:200]}"
        if not isinstance(reply, SchedAck):
            return 502, f"job {job_id}'s coordinator {peer.short} answered {type(reply).__name__}"
        if not reply.ok:
            return (403 if reply.reason.startswith("not allowed") else 409), reply.reason
        return 200, ""

    async def _on_job_list(self, peer: PeerId, msg: JobList) -> JobListing:
        """The jobs coordinated here, newest first, at most ``msg.limit`` (and the summaries' bytes)."""
        ids = sorted(self.jobs, key=lambda j: self.jobs[j].submitted, reverse=True)
        rows: list[dict] = []
        size = 0
        for n, job_id in enumerate(ids):
            summary = self.summary(job_id)
            if msg.state and summary["state"] != msg.state:
                continue
            size += len(cbor2.dumps(summary))
            if len(rows) >= msg.limit or size > MAX_LISTING_BYTES:
                rest = ids[n:]
                more = sum(1 for j in rest if not msg.state or self.summary(j)["state"] == msg.state)
                return JobListing(cbor2.dumps(rows), more)
            rows.append(summary)
        return JobListing(cbor2.dumps(rows), 0)

    async def _network_jobs(self, state: str) -> tuple[list[dict], dict[str, Any]]:
        """The jobs the live members coordinate (``jobs --all``): at most ``MAX_LIST_PEERS`` members asked,
        16 at once, each listing at most ``LIST_PER_PEER``; summaries that do not hold up are dropped."""
        peers = sorted(self._live() - {self.node.peer_id}, key=str)
        members = len(peers)
        if len(peers) > MAX_LIST_PEERS:
            peers = self.rng.sample(peers, MAX_LIST_PEERS)
        found: list[dict] = []
        counts = {"answered": 0, "more": 0}
        limiter = trio.CapacityLimiter(16)

        async def ask(p: PeerId) -> None:
            async with limiter:
                try:
                    reply = await self.node.transport.request(p, JobList(state, LIST_PER_PEER),
                                                              self.config.request_timeout_s)
                    rows = cbor2.loads(reply.jobs) if isinstance(reply, JobListing) else None
                except Exception as exc:
                    log.debug("job list from %s: %s", p.short, exc)
                    return
            if not isinstance(rows, list):
                return
            counts["answered"] += 1
            counts["more"] += reply.more
            for row in rows[:LIST_PER_PEER]:
                if (isinstance(row, dict) and isinstance(row.get("job_id"), str) and row.get("coordinator") == str(p)
                        and row.get("state") in ("submitted", "running", *FINAL)):
                    found.append(row)

        async with trio.open_nursery() as nursery:
            for p in peers:
                nursery.start_soon(ask, p)
        unique = {r["job_id"]: r for r in found}
        return list(unique.values()), {"peers_asked": len(peers), "peers_answered": counts["answered"],
                                       "peers_not_asked": members - len(peers), "more": counts["more"]}


def best_answer(answers: list[tuple[str, dict]]) -> tuple[str, dict] | None:
    """Of the answers peers gave, (source, summary): the coordinator's (it runs the job), else the replica
    copy of the highest (epoch, version): the newest line of the job that is known."""
    for answer in answers:
        if answer[0] == "coordinator":
            return answer
    if not answers:
        return None
    return max(answers, key=lambda a: (_int(a[1].get("epoch")), _int(a[1].get("version"))))


def _int(v: Any) -> int:
    return v if type(v) is int else -1
