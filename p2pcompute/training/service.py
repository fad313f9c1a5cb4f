"""TrainingService: a daemon's training runs (``p2pcompute train``), driven over its scheduler.

Theory of operation. ``POST /v1/train`` with a train.yaml's text (and an
optional checkpoint CID to resume from) parses it (spec.py), fetches the
checkpoint if one is named, and starts a ``NetworkTrainer`` (driver.py) in
the service's nursery; the run's tasks are jobs of this peer's scheduler.
``GET /v1/train/{id}`` is the run's status (round, loss, accuracy, peers,
bytes, curve, checkpoints, final CID), ``GET /v1/train`` lists the runs,
``POST /v1/train/cancel/{id}`` stops one. At most ``MAX_RUNS`` runs are kept
(the oldest finished one is forgotten first); runs are not replicated: a run
whose daemon stops can be resumed from its last checkpoint.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import trio

from ..errors import P2PComputeError, UserError
from ..node.api import HttpError, json_response, parse_json_body

MAX_RUNS = 64
MAX_RUNNING = 4
MAX_SPEC_BYTES = 64 << 10


class TrainingService:
    name = "training"

    def __init__(self, start_timeout: float = 300.0) -> None:
        self.node: Any = None
        self.runs: dict[str, Any] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.start_timeout = start_timeout
        self._nursery: trio.Nursery | None = None

    def attach(self, node: Any) -> None:
        if "scheduler" not in node.services:
            raise UserError("the training service needs the scheduler service attached first")
        self.node = node

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def status(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for r in self.runs.values():
            states[r.state] = states.get(r.state, 0) + 1
        return {"runs": states}

    def api_routes(self) -> dict:
        return {("POST", "/v1/train"): self._api_start, ("GET", "/v1/train"): self._api_list,
                ("GET", "/v1/train/{id}"): self._api_get, ("POST", "/v1/train/cancel/{id}"): self._api_cancel}

    async def start(self, text: str, resume: str | None = None) -> str:
        """Start a run from a train.yaml's text; its id. ``UserError`` if it cannot start."""
        from .driver import NetworkTrainer
        from .spec import parse

        if self._nursery is None:
            raise UserError("the training service is starting")
        spec = parse(text)
        running = sum(r.state in ("running", "waiting for peers") for r in self.runs.values())
        if running >= MAX_RUNNING:
            raise UserError(f"{running} training runs here already: at most {MAX_RUNNING} at once")
        checkpoint = await self._checkpoint(resume) if resume else None
        run_id = "t" + uuid.uuid4().hex[:12]
        trainer = NetworkTrainer(self.node.services["scheduler"], self.node.services["storage"], spec, run_id,
                                 resume=checkpoint, rng=random.Random(), start_timeout=self.start_timeout)
        self._forget_old()
        self.runs[run_id] = trainer
        scope = trio.CancelScope()
        self.scopes[run_id] = scope

        async def go() -> None:
            with scope:
                await trainer.run()

        self._nursery.start_soon(go)
        return run_id

    async def _checkpoint(self, text: str) -> dict:
        from ..storage.cid import Cid
        from ..storage.exporter import read_file
        from .driver import MAX_CHECKPOINT_BYTES, read_checkpoint

        storage = self.node.services["storage"]
        try:
            cid = Cid.parse(text)
            await storage.fetch(cid, pin=True, timeout=60.0)
            blob = await trio.to_thread.run_sync(lambda: read_file(storage.blockstore.get, cid, 0,
                                                                   MAX_CHECKPOINT_BYTES + 1))
        except P2PComputeError as exc:
            raise UserError(f"checkpoint {text[:80]}: {exc}") from None
        if len(blob) > MAX_CHECKPOINT_BYTES:
            raise UserError(f"checkpoint {text[:80]} is over {MAX_CHECKPOINT_BYTES} bytes")
        return read_checkpoint(blob)

    def _forget_old(self) -> None:
        finished = [k for k, r in self.runs.items() if r.done.is_set()]
        while len(self.runs) >= MAX_RUNS and finished:
            key = finished.pop(0)
            self.runs.pop(key, None)
            self.scopes.pop(key, None)

    # --- control API --------------------------------------------------------------------------------

    async def _api_start(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if len(body) > MAX_SPEC_BYTES:
            raise HttpError(413, f"a train.yaml of at most {MAX_SPEC_BYTES} bytes")
        request = parse_json_body(body)
        text, resume = request.get("spec"), request.get("resume")
        if not isinstance(text, str) or not (resume is None or isinstance(resume, str)):
            raise HttpError(400, "give \"spec\" (the train.yaml's text) and optionally \"resume\" (a CID)")
        try:
            run_id = await self.start(text, resume)
        except UserError as exc:
            raise HttpError(400, str(exc)) from None
        return json_response(self.runs[run_id].status())

    async def _api_list(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        return json_response({"runs": [{k: v for k, v in r.status().items() if k != "curve"}
                                       for r in self.runs.values()]})

    async def _api_get(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        run = self.runs.get(query.get("id", ""))
        if run is None:
            raise HttpError(404, f"no training run {query.get('id', '')[:40]} here")
        return json_response(run.status())

    async def _api_cancel(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        run_id = query.get("id", "")
        if run_id not in self.runs:
            raise HttpError(404, f"no training run {run_id[:40]} here")
        self.scopes[run_id].cancel()
        return json_response({"id": run_id, "cancelled": True})
