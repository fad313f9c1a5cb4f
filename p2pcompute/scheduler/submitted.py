"""The jobs submitted through this peer: ``p2pcompute jobs`` keeps listing them after their coordinator moved.

Theory of operation. The peer a job is submitted through coordinates it
until it dies or is replaced (a takeover, or a fenced coordinator stepping
down: replication.py); then the job is no longer in the service's ``jobs``.
``Submitted`` remembers, per job submitted here, the last summary seen of it
(without its tasks), the newest ``MAX_KEPT`` jobs (the oldest forgotten), and
saves them in the data dir (``submitted.json``), so that a daemon restarted
after a takeover still lists its jobs. ``jobs`` shows a moved job with its
current state: it is looked up at its coordinator or replicas
(job_lookup.py), at most ``MAX_LOOKUPS`` of the newest unfinished ones per
listing; a finished one shows its last summary, and one not found now shows
its last summary marked ``stale``. Pure bookkeeping: no I/O but ``load`` and
``save``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

log = logging.getLogger("p2pcompute.scheduler.service")
MAX_KEPT = 1000           # jobs remembered per peer
MAX_LOOKUPS = 50          # moved, unfinished jobs looked up across the network per listing
FILE = "submitted.json"
KEYS = ("job_id", "name", "coordinator", "state", "reason", "progress", "epoch", "outputs")
FINAL = ("done", "failed", "cancelled")


def _slim(summary: dict) -> dict:
    """A summary's fields kept here (no tasks, stats or story): bounded by the job's output count."""
    return {k: summary.get(k) for k in KEYS}


class Submitted:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.jobs: OrderedDict[str, dict] = OrderedDict()      # job id -> last summary seen (oldest first)
        self._dirty = False

    def add(self, summary: dict) -> None:
        job_id = summary["job_id"]
        self.jobs.pop(job_id, None)
        self.jobs[job_id] = _slim(summary)
        while len(self.jobs) > MAX_KEPT:
            self.jobs.popitem(last=False)
        self._dirty = True

    def seen(self, summary: dict) -> None:
        """A newer summary of a job submitted here (its order is kept)."""
        job_id = summary.get("job_id")
        if job_id in self.jobs:
            slim = _slim(summary)
            if slim != self.jobs[job_id]:
                self.jobs[job_id] = slim
                self._dirty = True

    def moved(self, here: set[str] | dict) -> list[str]:
        """Jobs submitted here that this peer no longer coordinates, newest first."""
        return [j for j in reversed(self.jobs) if j not in here]

    def to_look_up(self, here: set[str] | dict) -> list[str]:
        """Of the moved jobs, those to ask the network about now: unfinished when last seen, the newest
        ``MAX_LOOKUPS``."""
        return [j for j in self.moved(here) if self.jobs[j].get("state") not in FINAL][:MAX_LOOKUPS]

    def load(self) -> None:
        if self.path is None:
            return
        try:
            rows = json.loads(self.path.read_text())["jobs"]
            for row in rows[-MAX_KEPT:]:
                if isinstance(row, dict) and isinstance(row.get("job_id"), str) and 0 < len(row["job_id"]) <= 128:
                    self.jobs[row["job_id"]] = _slim(row)
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
            log.warning("ignoring unreadable %s (the jobs submitted here before are not listed): %s",
                        self.path, str(exc)[:200])
        self._dirty = False

    def save(self) -> None:
        if self.path is None or not self._dirty:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"jobs": list(self.jobs.values())}))
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            log.warning("could not save %s: %s", self.path, exc)


def listed(summary: dict[str, Any], *, moved: bool, stale: bool = False) -> dict[str, Any]:
    """A summary as ``jobs`` lists it: ``moved`` when another peer coordinates it now; ``stale`` when it
    could not be found now (its last summary seen)."""
    return _slim(summary) | {"submitted_here": True, "moved": moved} | ({"stale": True} if stale else {})
