"""The trio driver of one training run on the network: the pure coordinator, its tasks run as jobs.

Theory of operation
-------------------
``NetworkTrainer`` owns one ``Coordinator`` (coordinator.py) and carries out
its commands, in order, under one lock:

* ``Assign``s -> the assignments of one step (sync: a round's) as one job on
  this peer's scheduler (``SchedulerService.submit``), a task each, so that
  tasks are placed, retried and checked like any other: an opset-2 ``graph``
  task (``inprocess.task_graph``: one step's gradient, or H local steps'
  delta) whose inputs are CIDs: the parameters of the assignment's version
  (published once per version) and the shard's minibatch(es)
  (``inprocess.feeds``: fixed by shard and round, whoever computes them).
  When the job ends, each done task's outputs are in this peer's blockstore
  (the scheduler fetched them); they are decoded, checked
  (``model.check_update``: names, dtypes, shapes; a malformed update is not
  fed and its shard times out to another peer) and fed as ``UpdateArrived``
  with the payload as the output CIDs. The tasks of a job that failed (the
  scheduler's retries spent) are submitted again as a new job, at most
  ``MAX_RESUBMITS`` times, then the run fails. (One job per round rather
  than per task: a job's fixed costs, its record's replication above all,
  are paid once a round.)
* ``Aggregate`` / ``Apply`` -> ``inprocess.Updater`` (the robust rule, then
  the optimiser: the same code as the in-process run, so a run with the same
  seed computes the same numbers), the new parameters published (version + 1),
  test accuracy measured here, a point on the curve.
* ``Aggregate`` with ``param_shards = P`` > 1 (parameter sharding) ->
  instead, one job of P tasks: task i (``parts.aggregate_graph``: the mean
  of the round's updates over part i's column range, then the optimiser
  step) is pinned (``placement.PEER_LABEL``) to part i's owner, the live
  unbanned peer XOR-closest to ``SHA-256(run/param-shard/i)`` in the DHT
  keyspace with no two parts on one peer (``sharding.distinct_owners`` with
  ``network_key``); its inputs are CIDs: part i of every update (the
  gradient graphs output their update already cut, ``parts.split_outputs``,
  so an owner fetches only its range), part i of the parameters and of the
  velocity; its outputs are the part's new parameters and velocity, joined
  here (``parts.join``) into the next version. A part task that fails or is
  not done within ``task_timeout`` is submitted again to the next closest
  peer (its owner passed over for the rest of the run). The numbers are the
  unsharded run's: the mean as numpy sums it, the optimiser element-wise.
* ``spot_check: r`` -> every job of the run carries the trust layer's
  ``spot-check(r, rtol=1e-6, atol=1e-9)`` verification: a share r of tasks
  is recomputed by this (trusted) peer, a result far from it is not taken
  and its peer is banned (scheduler/verification/); the coordinator's own
  ``SpotCheck`` commands (the simulation's) are not used here.
* ``Checkpoint`` -> a checkpoint record (CBOR: the spec, the coordinator's
  record, parameters, optimiser state, curve) added and pinned: its CID is a
  ``--resume`` point. ``Finished`` -> the final checkpoint, the run is done.

The coordinator's peers are *lanes*: ``spec.peers`` logical workers that
spread the assignments (async: one in flight per lane). Where a task runs is
the scheduler's placement, and a peer lost mid-task is the scheduler's
retry: the task runs again elsewhere and the shard is still counted once. A
lane whose task is not answered within ``task_timeout`` has its shard handed
to another lane (the first answer wins). Nothing starts before ``spec.peers``
peers (this one included) are known to the scheduler. Bytes are counted as
the coordinator sees them (parameters down per assignment, updates up) and,
apart, the minibatches shipped.
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from typing import Any

import cbor2
import numpy as np
import trio

from ..errors import P2PComputeError, UserError
from ..ops import tensor_format
from ..ops.tasks import InputFile, Limits, Task
from . import data as datasets
from .coordinator import Aggregate, Apply, Assign, Checkpoint, Coordinator, Finished, PeerJoined, Refused, Tick, \
    TrainConfig, UpdateArrived
from .inprocess import Updater, feeds, payload_of, task_graph
from .model import Params, accuracy, check_update, init_params
from .optim import flatten, nbytes
from .parts import aggregate_graph, join, part_name, split_outputs
from .sharding import aggregate_memory, distinct_owners, network_key, ranges
from .spec import TrainSpec, from_dict

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "p2pcompute/train-checkpoint/v1"
MAX_RESUBMITS = 5
SPOT_TOLERANCE = "rtol=1e-6, atol=1e-9"   # a recomputed gradient on another machine: float noise only
MAX_CHECKPOINT_BYTES = 64 << 20
TICK_S = 1.0


class TrainFailed(P2PComputeError):
    pass


def encode_params(params: Params) -> dict[str, bytes]:
    return {n: tensor_format.encode(np.asarray(v)) for n, v in params.items()}


def decode_params(raw: Any) -> Params:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, bytes) for k, v in raw.items()):
        raise ValueError("parameters must map names to tensor bytes")
    return {n: np.asarray(tensor_format.decode(v)) for n, v in raw.items()}


def read_checkpoint(blob: bytes) -> dict:
    """A checkpoint record's fields, checked; ``UserError`` saying what is wrong."""
    try:
        record = cbor2.loads(blob)
        if not isinstance(record, dict) or record.get("kind") != CHECKPOINT_KIND:
            raise ValueError(f"not a training checkpoint (kind {str(record.get('kind'))[:60]!r})"
                             if isinstance(record, dict) else "not a training checkpoint")
        return {"spec": from_dict(record["spec"]), "coordinator": record["coordinator"],
                "params": decode_params(record["params"]), "velocity": decode_params(record["velocity"]),
                "curve": [list(p) for p in record["curve"]], "elapsed": float(record["elapsed"])}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything malformed in a record from elsewhere
        raise UserError(f"the checkpoint is malformed: {exc}") from None


class NetworkTrainer:
    def __init__(self, sched: Any, storage: Any, spec: TrainSpec, run_id: str, *, resume: dict | None = None,
                 rng: random.Random | None = None, start_timeout: float = 300.0) -> None:
        self.sched, self.storage, self.spec, self.run_id = sched, storage, spec, run_id
        self.store = storage.blockstore
        self.rng = rng or random.Random(spec.seed)
        self.start_timeout = start_timeout
        self.split = datasets.load(spec)
        self.cfg = spec.run_config()
        params = init_params(self.cfg.model, np.random.default_rng(spec.seed))
        train = TrainConfig(**{**self.cfg.train.__dict__, "param_bytes": nbytes(params)})
        self.curve: list[list[float]] = []     # [round, loss, accuracy, bytes, seconds]
        self.elapsed_before = 0.0
        if resume is None:
            self.coord = Coordinator(train, random.Random(self.rng.getrandbits(64)))
            self.updater = Updater(self.cfg, params)
        else:
            self._resume(resume, train, params)
        self.lock = trio.Lock()
        self.versions: dict[int, dict[str, tuple[str, int]]] = {}   # version -> {param: (CID, size)}
        self.losses: dict[tuple[int, int], float] = {}
        self.executors: dict[int, set[str]] = defaultdict(set)        # round -> peers that ran its tasks
        self.all_executors: set[str] = set()
        self.round_pins: dict[int, list[str]] = defaultdict(list)      # round -> minibatch CIDs pinned here
        self.state = "waiting for peers"
        self.error = ""
        self.checkpoints: list[list] = []
        self.final_cid = ""
        self.data_bytes = 0
        self.jobs = 0
        self.active: set[str] = set()                                 # job ids submitted, not ended
        self.refused: list[str] = []
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.done = trio.Event()
        self.parts = spec.param_shards
        self.ranges = ranges(self.cfg.model.param_count(), self.parts) if self.parts > 1 else []
        self.graphs: dict[tuple[str, int], Any] = {}
        self.part_sizes: dict[str, int] = {}                          # update part CID -> bytes
        self.owner_stats: dict[str, list[int]] = {}                   # peer -> [parts aggregated, bytes read]
        self.last_owners: list[str] = []
        self.aggregate_jobs = 0
        self.failed_owners: set[str] = set()                          # owners a part task failed on: passed over

    def _resume(self, ck: dict, train: TrainConfig, params: Params) -> None:
        old: TrainSpec = ck["spec"]
        for key in ("dataset", "synthetic", "seed", "hidden", "mode", "shards", "batch"):
            if getattr(old, key) != getattr(self.spec, key):
                raise UserError(f"the checkpoint was made with {key} {getattr(old, key)!r}, this train.yaml has "
                                f"{getattr(self.spec, key)!r}")
        problem = check_update(self.cfg.model, ck["params"])
        if problem:
            raise UserError(f"the checkpoint's parameters do not fit the model: {problem}")
        record = dict(ck["coordinator"])
        record["config"] = dict(train.__dict__)       # this train.yaml's schedule (e.g. more rounds)
        if record.get("finished"):                    # its slots are the closed last round's: a new round starts
            record["done"], record["finished"] = [None] * train.shards, False
        try:
            self.coord = Coordinator.from_record(record, random.Random(self.rng.getrandbits(64)))
        except ValueError as exc:
            raise UserError(f"the checkpoint's coordinator record: {exc}") from None
        self.coord.finished = self.coord.round >= train.rounds
        self.updater = Updater(self.cfg, ck["params"])
        self.updater.set_velocity(ck["velocity"])
        self.curve = ck["curve"]
        self.elapsed_before = ck["elapsed"]

    # --- what the service and the CLI read ------------------------------------------------------

    def status(self) -> dict[str, Any]:
        last = self.curve[-1] if self.curve else [self.coord.round, None, None, 0, 0.0]
        r = max(0, self.coord.round - 1)
        return {"id": self.run_id, "name": self.spec.name, "state": self.state, "error": self.error,
                "mode": self.spec.mode, "round": self.coord.round, "rounds": self.spec.rounds,
                "version": self.coord.version, "loss": last[1], "accuracy": last[2],
                "bytes": self.moved(), "data_bytes": self.data_bytes, "elapsed_s": self.elapsed(),
                "peers": len(self.executors.get(self.coord.round) or self.executors.get(r) or ()),
                "peers_seen": len(self.all_executors), "jobs": self.jobs, "stats": dict(self.coord.stats),
                "checkpoints": list(self.checkpoints), "final": self.final_cid,
                "params": {n: c for n, (c, _) in self.versions.get(self.coord.version, {}).items()},
                "curve": [list(p) for p in self.curve], "refused": self.refused[-5:],
                "param_shards": self.parts, "aggregate_jobs": self.aggregate_jobs, "owners": list(self.last_owners),
                "part_bytes": aggregate_memory(self.cfg.model.param_count() * 8, self.spec.shards, self.parts)
                if self.parts > 1 else 0, "peer_memory": self.spec.peer_memory,
                "part_owners": {p: {"parts": n, "bytes": b} for p, (n, b) in sorted(self.owner_stats.items())},
                "verification": self._verification()}

    def _verification(self) -> str:
        """The scheduler's verification of every job of this run: the trust layer's spot checks
        (a share of tasks recomputed on this, trusted, peer; a far result bans its peer)."""
        return f"spot-check({self.spec.spot_check!r}, {SPOT_TOLERANCE})" if self.spec.spot_check else "none"

    def moved(self) -> int:
        return self.coord.stats["bytes_down"] + self.coord.stats["bytes_up"]

    def elapsed(self) -> float:
        if self.started_at is None:
            return self.elapsed_before
        end = self.ended_at if self.ended_at is not None else time.perf_counter()
        return self.elapsed_before + end - self.started_at

    # --- the run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except UserError as exc:
            self.state, self.error = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug here ends this run, not the daemon
            log.exception("training run %s failed", self.run_id)
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            if self.ended_at is None:
                self.ended_at = time.perf_counter()
            if self.state not in ("done", "failed"):
                self.state = "cancelled"
            with trio.CancelScope(shield=True):   # the tasks still out are not needed any more
                for job_id in sorted(self.active):
                    try:
                        await self.sched.cancel(job_id, f"training run {self.run_id} {self.state}")
                    except P2PComputeError:
                        pass
            self.done.set()

    async def _run(self) -> None:
        with trio.move_on_after(self.start_timeout) as waiting:
            while len(self.sched.candidates()) < self.spec.peers:
                await trio.sleep(0.2)
        if waiting.cancelled_caught:
            raise UserError(f"{len(self.sched.candidates())} peers known, the training asks for {self.spec.peers}"
                            f" (within {self.start_timeout:g} s)")
        self.started_at = time.perf_counter()
        self.state = "running"
        await self._publish(self.coord.version)
        if self.coord.finished:
            await self._finish()
            return
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            now = trio.current_time()
            for lane in range(self.spec.peers):
                await self._feed(PeerJoined(f"lane{lane}"), now)
            while not self.coord.finished and self.state == "running":
                await trio.sleep(TICK_S)
                await self._feed(Tick(), trio.current_time())
            nursery.cancel_scope.cancel()
        if self.state == "running":
            raise TrainFailed(self.error or "the training stopped")

    async def _feed(self, event: Any, now: float) -> None:
        async with self.lock:
            assigns: list[Assign] = []
            for cmd in self.coord.handle(event, now):
                if isinstance(cmd, Assign):
                    assigns.append(cmd)
                else:
                    await self._execute(cmd)
            if assigns:                     # one job for the step's assignments (sync: the round's)
                self.nursery.start_soon(self._work, assigns)

    async def _execute(self, cmd: Any) -> None:
        if isinstance(cmd, Aggregate) and self.parts > 1:
            await self._aggregate_parts(cmd)
            await self._unpin([cid for c in cmd.contributions for cid in c.payload.values()])
            await self._round_closed(cmd.round, [(cmd.round, c.shard) for c in cmd.contributions])
        elif isinstance(cmd, Aggregate):
            payloads = [await self._load(c.payload) for c in cmd.contributions]
            self.updater.aggregate(payloads)
            await self._unpin([cid for c in cmd.contributions for cid in c.payload.values()])
            await self._round_closed(cmd.round, [(cmd.round, c.shard) for c in cmd.contributions])
        elif isinstance(cmd, Apply):
            self.updater.apply(await self._load(cmd.contribution.payload), cmd.contribution.weight)
            await self._unpin(list(cmd.contribution.payload.values()))
            await self._publish(self.coord.version)
            if self.coord.round > cmd.round:  # this update closed the epoch
                await self._round_closed(cmd.round, [k for k in self.losses if k[0] == cmd.round], publish=False)
        elif isinstance(cmd, Checkpoint):
            cid = await self._checkpoint()
            self.checkpoints.append([cmd.round, cid])
        elif isinstance(cmd, Finished):
            await self._finish()
        elif isinstance(cmd, Refused):
            self.refused.append(f"round {cmd.round} shard {cmd.shard}: {cmd.reason}")

    async def _round_closed(self, rnd: int, keys: list[tuple[int, int]], publish: bool = True) -> None:
        if publish:
            await self._publish(self.coord.version)
        for v in [v for v in self.versions if v < self.coord.version - self.spec.staleness_bound - 1]:
            await self._unpin([c for c, _ in self.versions.pop(v).values()])
        await self._unpin(self.round_pins.pop(rnd, []))
        losses = [self.losses.pop(k) for k in keys if k in self.losses]
        acc = await trio.to_thread.run_sync(accuracy, self.cfg.model, self.updater.params, self.split.x_test,
                                            self.split.y_test)
        self.curve.append([rnd + 1, float(np.mean(losses)) if losses else None, acc, self.moved(), self.elapsed()])

    async def _finish(self) -> None:
        self.ended_at = time.perf_counter()
        self.final_cid = await self._checkpoint()
        self.state = "done"

    # --- one assignment: a job ---------------------------------------------------------------------

    async def _task(self, a: Assign) -> Any:
        """The assignment as a graph task of a job (its minibatch added here), or None if its parameter
        version is no longer kept (the coordinator's staleness rule would refuse it anyway)."""
        from ..scheduler.model import InputRef, Requirements, TaskSpec

        params = self.versions.get(a.version)
        if params is None:
            return None
        graph = self._graph(a)
        refs = []
        for name, value in feeds(self.cfg, self.split, a).items():
            cid, size = await self._add(tensor_format.encode(value))
            refs.append(InputRef(name, cid=cid, size=size))
            self.round_pins[a.round].append(cid)
            self.data_bytes += size
        refs += [InputRef(n, cid=c, size=s) for n, (c, s) in params.items()]
        limits = Limits(memory=512 << 20, cpu_seconds=max(10.0, self.spec.task_timeout),
                        wall_seconds=self.spec.task_timeout)
        task = Task("graph", inputs={d.name: InputFile("") for d in graph.inputs},
                    outputs={o: "tensor" for o in graph.outputs}, limits=limits, graph=graph.to_cbor())
        return TaskSpec(f"r{a.round}-s{a.shard}-{a.peer}", "train", "graph", cbor2.dumps(task.to_wire()), tuple(refs),
                        requirements=Requirements(cpus=1.0, memory=512 << 20, timeout_s=self.spec.task_timeout,
                                                  opset=2))

    def _graph(self, a: Assign) -> Any:
        """The assignment's graph; with parameter parts, its update cut into ``part.<i>`` outputs."""
        key = (a.kind, a.steps)
        if key not in self.graphs:
            graph = task_graph(self.cfg, a)
            if self.parts > 1:
                graph = split_outputs(graph, self.cfg.model, self.ranges, "grad." if a.kind == "gradient" else "delta.")
            self.graphs[key] = graph
        return self.graphs[key]

    async def _work(self, assigns: list[Assign]) -> None:
        """The assignments of one coordinator step (sync: a round's) as one job, a task each: the
        job is placed, retried and checked by the scheduler; a job that fails is submitted again for
        the tasks it did not finish, at most ``MAX_RESUBMITS`` times."""
        from ..scheduler.model import JobPlan, RetryPolicy

        specs = {}
        for a in assigns:
            spec = await self._task(a)
            if spec is not None:
                specs[spec.task_id] = (a, spec)
        tries = 0
        while specs:
            tries += 1
            first = next(iter(specs.values()))[0]
            job_id = f"{self.run_id}-{self.jobs + 1}-r{first.round}"
            plan = JobPlan(job_id, f"train {self.spec.name}: round {first.round}, {len(specs)} shard(s)",
                           tuple(spec for _, spec in specs.values()),
                           RetryPolicy(retries=3, backoff_s=0.5, backoff_max_s=5.0),
                           verification=self._verification(),
                           outputs=tuple((tid, o) for tid, (a, _) in specs.items()
                                         for o in self._graph(a).outputs))
            self.jobs += 1
            self.active.add(job_id)                     # before submit: a cancel may land inside it
            await self.sched.submit(plan)
            report = await self.sched.wait(job_id)      # cancelled: the id stays, run() cancels the job
            self.active.discard(job_id)
            js = self.sched.jobs[job_id].js
            for tid in [t for t in specs if js.tasks[t].state == "done"]:
                a, _ = specs.pop(tid)
                await self._arrived(a, js.tasks[tid])
            if specs:
                log.info("training %s: job %s %s: %s", self.run_id, job_id, report.kind, report.reason)
                if tries > MAX_RESUBMITS:
                    self.error = f"round {first.round}: {tries} jobs failed, the last: {report.reason}"
                    self.state = "failed"
                    return

    async def _arrived(self, a: Assign, run: Any) -> None:
        if run.peer is not None:
            self.executors[a.round].add(str(run.peer))
            self.all_executors.add(str(run.peer))
        outputs = dict(run.outputs)
        try:
            values = await trio.to_thread.run_sync(self._read_outputs, outputs)
        except (P2PComputeError, ValueError) as exc:
            self.refused.append(f"round {a.round} shard {a.shard}: unreadable update ({exc})")
            return
        problem, payload = self._check(a, values)
        if problem:
            self.refused.append(f"round {a.round} shard {a.shard}: malformed update ({problem})")
            return
        self.losses[(a.round, a.shard)] = float(values["loss"])
        if self.parts > 1:
            cids = {part_name(i): outputs[part_name(i)] for i in range(self.parts)}
            self.part_sizes.update({c: int(run.sizes.get(n) or 0) for n, c in cids.items()})
        else:
            prefix = "grad." if a.kind == "gradient" else "delta."
            cids = {n: outputs[prefix + n] for n in payload}
        await self._feed(UpdateArrived(a.peer, a.round, a.shard, cids, nbytes(payload)), trio.current_time())

    def _check(self, a: Assign, values: dict[str, np.ndarray]) -> tuple[str, Params]:
        """(problem or "", the update as named parameters) of a task's outputs."""
        if np.ndim(values.get("loss")) != 0:
            return "loss", {}
        if self.parts == 1:
            payload = payload_of(a, values)
            return check_update(self.cfg.model, payload), payload
        for i, (lo, hi) in enumerate(self.ranges):
            v = values.get(part_name(i))
            if v is None or v.shape != (hi - lo,) or v.dtype != np.float64 or not np.all(np.isfinite(v)):
                return f"{part_name(i)}: not {hi - lo} finite float64 values", {}
        return "", join([values[part_name(i)] for i in range(self.parts)], self.updater.params)

    def _read_outputs(self, outputs: dict[str, str]) -> dict[str, np.ndarray]:
        from ..storage.cid import Cid
        from ..storage.exporter import read_file

        return {n: np.asarray(tensor_format.decode(read_file(self.store.get, Cid.parse(c)))) for n, c in outputs.items()}

    # --- parameter parts: each aggregated on its owner ------------------------------------------------

    async def _aggregate_parts(self, cmd: Aggregate) -> None:
        """Part i of the round's updates aggregated on the live peer closest to part i's key, as a task
        pinned to that peer (``placement.PEER_LABEL``); its outputs (the part's parameters and velocity)
        joined here. A part whose task fails or is not done within ``task_timeout`` goes to the next
        closest peer (the owner it failed on is left out), at most ``MAX_RESUBMITS`` times."""
        from ..scheduler.model import JobPlan, RetryPolicy

        flat_p = flatten(self.updater.params)
        velocity = self.updater.velocity()
        flat_v = flatten(velocity) if velocity else np.zeros_like(flat_p)
        inputs: dict[int, list] = {}
        added: list[str] = []
        for i, (lo, hi) in enumerate(self.ranges):
            (p_cid, p_size), (v_cid, v_size) = [await self._add(tensor_format.encode(np.ascontiguousarray(x[lo:hi])))
                                                for x in (flat_p, flat_v)]
            added += [p_cid, v_cid]
            inputs[i] = [(f"u{j}", c.payload[part_name(i)], self.part_sizes.get(c.payload[part_name(i)]))
                         for j, c in enumerate(cmd.contributions)] + [("p", p_cid, p_size), ("v", v_cid, v_size)]
        results: dict[int, tuple[str, dict]] = {}
        for _ in range(MAX_RESUBMITS + 1):
            pending = [i for i in range(self.parts) if i not in results]
            if not pending:
                break
            chosen = {i: self._owner(i) for i in pending}
            specs = {f"r{cmd.round}-part{i}": (i, self._aggregate_task(cmd, i, chosen[i], inputs[i])) for i in pending}
            job_id = f"{self.run_id}-{self.jobs + 1}-r{cmd.round}-aggregate"
            plan = JobPlan(job_id, f"train {self.spec.name}: round {cmd.round}, aggregate {len(specs)} part(s)",
                           tuple(t for _, t in specs.values()),
                           RetryPolicy(retries=2, backoff_s=0.5, backoff_max_s=2.0),
                           verification=self._verification(),
                           outputs=tuple((tid, o) for tid in specs for o in ("p_new", "v_new")))
            self.jobs += 1
            self.aggregate_jobs += 1
            self.active.add(job_id)
            await self.sched.submit(plan)
            with trio.move_on_after(self.spec.task_timeout):
                await self.sched.wait(job_id)
            js = self.sched.jobs[job_id].js
            for tid, (i, _) in specs.items():
                run = js.tasks[tid]
                if run.state == "done":
                    results[i] = (str(run.peer), dict(run.outputs))
                else:
                    self.failed_owners.add(chosen[i])
            if js.tasks and any(js.tasks[t].state != "done" for t in specs):
                await self.sched.cancel(job_id, "a parameter part's owner did not answer: the next closest takes it")
            self.active.discard(job_id)
        if len(results) < self.parts:
            raise TrainFailed(f"round {cmd.round}: parameter parts {sorted(set(range(self.parts)) - set(results))} "
                              f"not aggregated after {MAX_RESUBMITS + 1} jobs")
        await self._join_parts(cmd, results, inputs)
        await self._unpin(added)

    def _owner(self, part: int) -> str:
        """Part ``part``'s owner among the live, unbanned peers, passing over those a part task failed on
        in this run (a dead peer stays a candidate until membership declares it dead) unless no other is left."""
        ledger = self.sched.verify_env().ledger
        live = [str(c.peer) for c in self.sched.candidates() if not ledger.banned(str(c.peer))]
        usable = [p for p in live if p not in self.failed_owners] or live
        if not usable:
            raise TrainFailed(f"no live peer left to aggregate parameter part {part}")
        return distinct_owners(self.run_id, self.parts, usable, network_key)[part]

    def _aggregate_task(self, cmd: Aggregate, part: int, owner: str, refs: list) -> Any:
        from ..scheduler.model import InputRef, Requirements, TaskSpec
        from ..scheduler.placement import PEER_LABEL

        lo, hi = self.ranges[part]
        sync = self.spec.mode == "sync"
        graph = aggregate_graph(len(cmd.contributions), hi - lo, self.spec.mode,
                                self.spec.lr if sync else self.spec.outer_lr,
                                self.spec.momentum if sync else self.spec.outer_momentum)
        limits = Limits(memory=512 << 20, cpu_seconds=max(10.0, self.spec.task_timeout),
                        wall_seconds=self.spec.task_timeout)
        task = Task("graph", inputs={d.name: InputFile("") for d in graph.inputs},
                    outputs={o: "tensor" for o in graph.outputs}, limits=limits, graph=graph.to_cbor())
        return TaskSpec(f"r{cmd.round}-part{part}", "aggregate", "graph", cbor2.dumps(task.to_wire()),
                        tuple(InputRef(n, cid=c, size=s or None) for n, c, s in refs),
                        requirements=Requirements(cpus=1.0, memory=512 << 20, timeout_s=self.spec.task_timeout,
                                                  opset=2, labels={PEER_LABEL: owner}))

    async def _join_parts(self, cmd: Aggregate, results: dict[int, tuple[str, dict]], inputs: dict[int, list]) -> None:
        ps, vs, outs = [], [], []
        for i in range(self.parts):
            peer, outputs = results[i]
            got = await trio.to_thread.run_sync(self._read_outputs, {"p": outputs["p_new"], "v": outputs["v_new"]})
            lo, hi = self.ranges[i]
            if any(got[k].shape != (hi - lo,) or not np.all(np.isfinite(got[k])) for k in ("p", "v")):
                raise TrainFailed(f"round {cmd.round}: parameter part {i} from {peer[:16]} is malformed")
            ps.append(got["p"])
            vs.append(got["v"])
            outs += [outputs["p_new"], outputs["v_new"]]
            stats = self.owner_stats.setdefault(peer, [0, 0])
            stats[0] += 1
            stats[1] += (hi - lo) * 8 * (len(cmd.contributions) + 2)   # the part of every update, p and v
        self.last_owners = [results[i][0] for i in range(self.parts)]
        self.updater.params = join(ps, self.updater.params)
        if self.updater.velocity() or (self.spec.momentum if self.spec.mode == "sync" else self.spec.outer_momentum):
            self.updater.set_velocity(join(vs, self.updater.params))
        await self._unpin(outs)

    # --- storage --------------------------------------------------------------------------------

    async def _add(self, blob: bytes) -> tuple[str, int]:
        from ..storage.importer import import_bytes

        def add() -> tuple[str, int]:
            with self.store.session():
                result = import_bytes(blob, self.store.put)
                self.store.pin(result.cid)
                return str(result.cid), len(blob)

        return await trio.to_thread.run_sync(add)

    async def _unpin(self, cids: list[str]) -> None:
        def unpin() -> None:
            for c in cids:
                self.store.unpin(c)

        await trio.to_thread.run_sync(unpin)

    async def _load(self, payload: Any) -> Params:
        if not isinstance(payload, dict):
            raise TrainFailed(f"an update's payload is {type(payload).__name__}, not output CIDs")
        return await trio.to_thread.run_sync(self._read_outputs, payload)

    async def _publish(self, version: int) -> None:
        if version in self.versions:
            return
        out = {}
        for name, blob in encode_params(self.updater.params).items():
            out[name] = await self._add(blob)
        self.versions[version] = out

    async def _checkpoint(self) -> str:
        record = {"kind": CHECKPOINT_KIND, "spec": self.spec.to_dict(), "coordinator": self.coord.to_record(),
                  "params": encode_params(self.updater.params), "velocity": encode_params(self.updater.velocity()),
                  "curve": self.curve, "elapsed": self.elapsed()}
        cid, _ = await self._add(cbor2.dumps(record))
        return cid
