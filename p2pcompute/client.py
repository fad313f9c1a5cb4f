"""Jobs from Python: ``Client(data_dir).submit("job.yaml").wait()``.

A thin layer over the local daemon's ``/v1/jobs`` routes (what ``p2pcompute
submit`` uses). The daemon of ``data_dir`` coordinates the jobs submitted to
it; results are pinned there and read from its blockstore.

    from p2pcompute import Client
    job = Client("~/.p2pcompute").submit("examples/ndvi-map.job.yaml")
    summary = job.wait(timeout=600)        # raises JobFailed unless the job is done
    arrays = job.results()                 # {(task, output): numpy array or bytes}
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import P2PComputeError, UserError
from .node.client import ControlClient
from .node.config import default_data_dir

FINAL = ("done", "failed", "cancelled")


class JobFailed(P2PComputeError):
    """The job ended failed or cancelled; ``summary`` has its reason and progress."""

    def __init__(self, summary: dict) -> None:
        super().__init__(f"job {summary['job_id']} {summary['state']}: {summary.get('reason') or 'no reason given'}")
        self.summary = summary


class Job:
    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def describe(self) -> dict:
        """The summary, every task's state, attempts and story (as ``p2pcompute describe --json``)."""
        return self.client.api._call("GET", f"/v1/jobs/{self.id}")

    def state(self) -> str:
        return self.describe()["state"]

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> dict:
        """Block until the job ends; its summary if done, else JobFailed. TimeoutError past ``timeout`` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (summary := self.describe())["state"] not in FINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {summary['state']} after {timeout:g} s")
            time.sleep(poll)
        if summary["state"] != "done":
            raise JobFailed(summary)
        return summary

    def logs(self, task: str | None = None, limit: int = 100) -> dict:
        """Each attempt's peer, outcome and stderr, of ``task`` or of up to ``limit`` tasks that ran (as
        ``p2pcompute logs --json``): ``{"tasks": [{"task", "state", "attempts": [{"peer", "outcome", "stderr",
        ...}]}]}``; ``stderr`` is "" when the attempt wrote none, None (with ``log_error``) when unreachable."""
        params: dict[str, Any] = {"limit": limit} | ({"task": task} if task is not None else {})
        return self.client.api._call("GET", f"/v1/jobs/logs/{self.id}", params=params)

    def cancel(self, reason: str = "cancelled by the user") -> dict:
        """Cancel the job (at its coordinator, wherever it is: allowed from the peer it was submitted through)."""
        return self.client.api._call("POST", f"/v1/jobs/cancel/{self.id}", {"reason": reason})

    def result_bytes(self, summary: dict | None = None) -> Iterator[tuple[str, str, bytes]]:
        """(task, output, bytes) of each result of a finished job (skipped tasks have none), read from the
        blockstore of this client's daemon: where they are pinned if it coordinated the job; else it is
        asked to fetch them (and pin them) first."""
        from .storage import exporter
        from .storage.blockstore import Blockstore
        from .storage.cid import Cid

        summary = summary or self.describe()
        if summary["state"] != "done":
            raise UserError(f"job {self.id} is {summary['state']}, not done: no results")
        store = Blockstore.for_data_dir(self.client.data_dir)
        for task, output, cid in summary["outputs"]:
            if cid:
                root = Cid.parse(cid)
                if not store.has(root):       # coordinated elsewhere (or taken over): bring it here
                    try:
                        self.client.api._call("POST", "/v1/fetch", {"cid": cid})
                    except P2PComputeError as exc:
                        raise P2PComputeError(
                            f"result {output} of task {task} ({cid}) of job {self.id} cannot be fetched: {exc}. "
                            "If only its coordinator held it and that peer died, its successor runs the task "
                            "again: `describe` shows the job running until then.") from None
                yield task, output, b"".join(exporter.iter_file(store.get, root, 0, None))

    def results(self) -> dict[tuple[str, str], Any]:
        """Each result of a finished job: a numpy array for tensor outputs, else the file's bytes."""
        from .ops import tensor_format

        return {(task, output): tensor_format.decode(data) if data.startswith(tensor_format.MAGIC) else data
                for task, output, data in self.result_bytes()}


class Client:
    """Jobs on the daemon of ``data_dir`` (default: $P2PCOMPUTE_HOME or ~/.p2pcompute)."""

    def __init__(self, data_dir: str | Path | None = None, timeout: float = 60.0) -> None:
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.api = ControlClient(self.data_dir, timeout=timeout)

    def submit(self, job: str | Path, base: str | Path | None = None) -> Job:
        """Submit a job file, or a job.yaml text (then ``base`` is the directory its relative paths start from)."""
        if isinstance(job, Path) or (isinstance(job, str) and "\n" not in job and job.endswith((".yaml", ".yml"))):
            path = Path(job).expanduser().resolve()
            if not path.is_file():
                raise UserError(f"{job}: no such job file")
            summary = self.api._call("POST", "/v1/jobs", {"path": str(path)})
        else:
            summary = self.api._call("POST", "/v1/jobs", {"job": job, "base": str(Path(base or ".").resolve())})
        return Job(self, summary["job_id"])

    def jobs(self, state: str | None = None, all: bool = False) -> list[dict]:
        """Summaries of the jobs the daemon coordinates and of those submitted through it that another peer
        coordinates now (``moved``); only those in ``state`` (submitted, running, done, failed, cancelled) if
        given; ``all``: also the jobs other peers coordinate (bounded: at most 64 peers, 100 jobs each)."""
        params = ({"state": state} if state else {}) | ({"all": "1"} if all else {})
        return self.api._call("GET", "/v1/jobs", params=params or None)["jobs"]

    def job(self, job_id: str) -> Job:
        return Job(self, job_id)

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
