"""Drive the coordinator in one process with real numeric work (no network), in virtual time.

``run(RunConfig)`` joins ``peers`` simulated peers, feeds the coordinator's
``Assign``s to them, lets each finish after a (seeded, per-peer) virtual
duration, and turns the coordinator's ``Aggregate`` / ``Apply`` commands into
parameter updates with the model's step graphs (model.py), the aggregation
rule (aggregate.py) and the optimisers (optim.py). Faults are events too:
``kill_per_round`` peers are lost in the middle of every round (their work is
thrown away) and come back once the round has closed; ``byzantine`` peers
send attacked payloads. Bytes are counted as the coordinator sees them:
parameters shipped with every assignment, and every payload sent back.

This is the seam the network wiring replaces: on real peers an ``Assign``
becomes a task of the step graph (or of the local-steps loop) on the
executor, and ``UpdateArrived`` its result's CID.
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field

import numpy as np

from . import aggregate
from .coordinator import Aggregate, Apply, Assign, Coordinator, PeerJoined, PeerLost, TrainConfig, \
    UpdateArrived
from .data import Split, batch_indices, shard
from .model import Model, Params, accuracy, init_params, local_graph, loss_and_grads, step_graph
from .optim import Sgd, flatten, nbytes, outer_step, unflatten
from ..ops.graph import Graph


@dataclass
class RunConfig:
    train: TrainConfig
    model: Model = Model(64, (32,), 10)
    peers: int = 4
    batch: int = 32            # per shard and step
    lr: float = 0.1            # sync/async SGD; local mode's inner SGD
    momentum: float = 0.9      # sync SGD; local mode's inner SGD (reset every round)
    outer_lr: float = 0.7      # local mode (DiLoCo)
    outer_momentum: float = 0.9
    rule: str = "mean"
    byzantine: int = 0         # how many peers lie
    attack: str = "sign_flip"  # sign_flip | scaled | biased
    kill_per_round: int = 0
    target_accuracy: float = 0.95
    seed: int = 0


@dataclass
class Report:
    mode: str
    rounds: int
    version: int
    test_accuracy: float
    bytes_moved: int
    bytes_to_target: int | None          # bytes moved when test accuracy first reached the target
    rounds_to_target: int | None
    wall_seconds: float
    curve: list[tuple[int, int, float]] = field(default_factory=list)  # (round, bytes so far, accuracy)
    stats: dict = field(default_factory=dict)
    kills: int = 0                        # peers lost mid-round
    params: Params = field(default_factory=dict)  # the final parameters


def run(cfg: RunConfig, split: Split) -> Report:
    start = time.perf_counter()
    rng = random.Random(cfg.seed)
    model = cfg.model
    params = init_params(model, np.random.default_rng(cfg.seed))
    train = TrainConfig(**{**cfg.train.__dict__, "param_bytes": nbytes(params), "min_peers": cfg.peers})
    coord = Coordinator(train, random.Random(cfg.seed + 1))
    peers = [f"p{i}" for i in range(cfg.peers)]
    liars = set(peers[:cfg.byzantine])
    speed = {p: rng.uniform(0.5, 1.5) for p in peers}
    upd = Updater(cfg, params)
    queue: list[tuple[float, int, Assign, Params]] = []
    seq = 0
    now = 0.0
    killed: list[str] = []
    killed_round = -1
    kills = 0
    curve: list[tuple[int, int, float]] = []
    to_target: tuple[int, int] | None = None

    def moved() -> int:
        return coord.stats["bytes_down"] + coord.stats["bytes_up"]

    def record(round_: int) -> None:
        nonlocal to_target
        acc = accuracy(model, upd.params, split.x_test, split.y_test)
        curve.append((round_, moved(), acc))
        if to_target is None and acc >= cfg.target_accuracy:
            to_target = (round_, moved())

    def execute(commands: list) -> None:
        nonlocal seq
        for cmd in commands:
            if isinstance(cmd, Assign):  # the peer starts from the parameters of now (cmd.version)
                seq += 1
                payload = work(cfg, model, upd.params, split, cmd)
                if cmd.peer in liars:
                    payload = attack(cfg.attack, payload, rng)
                done = now + speed[cmd.peer] * rng.uniform(0.8, 1.2) * cmd.steps
                heapq.heappush(queue, (done, seq, cmd, payload))
            elif isinstance(cmd, Aggregate):
                upd.aggregate([c.payload for c in cmd.contributions])
                record(cmd.round + 1)
            elif isinstance(cmd, Apply):
                upd.apply(cmd.contribution.payload, cmd.contribution.weight)
                if coord.round > cmd.round:  # this update closed the epoch
                    record(cmd.round + 1)

    for p in peers:
        execute(coord.handle(PeerJoined(p), now))
    while queue and not coord.finished:
        now, _, task, payload = heapq.heappop(queue)
        if task.peer in killed:
            continue  # its work died with it
        if cfg.kill_per_round and killed_round != coord.round and task.round == coord.round:
            killed_round = coord.round  # mid-round: some shards are in, others not
            alive = sorted(set(peers) - set(killed))
            for victim in rng.sample(alive, min(cfg.kill_per_round, len(alive) - 1)):  # one always survives
                killed.append(victim)
                kills += 1
                execute(coord.handle(PeerLost(victim), now))
            if task.peer in killed:
                continue
        before = coord.round
        execute(coord.handle(UpdateArrived(task.peer, task.round, task.shard, payload, nbytes(payload)), now))
        if coord.round != before and killed:  # the round closed: the killed peers come back
            for p in killed:
                execute(coord.handle(PeerJoined(p), now))
            killed = []
    final = accuracy(model, upd.params, split.x_test, split.y_test)
    return Report(train.mode, coord.round, coord.version, final, moved(),
                  to_target[1] if to_target else None, to_target[0] if to_target else None,
                  time.perf_counter() - start, curve, dict(coord.stats), kills, upd.params)


NORM_WINDOW = 64


class Updater:
    """The numeric side of ``Aggregate`` / ``Apply``: the robust rule, then the optimiser (sync: SGD with
    momentum on the aggregated gradient; local: DiLoCo's outer Nesterov step on the aggregated delta;
    async: plain SGD on each update, scaled by its staleness weight). The network driver uses it too,
    so that a distributed run and an in-process run with the same seed compute the same numbers."""

    def __init__(self, cfg: RunConfig, params: Params) -> None:
        self.cfg = cfg
        self.mode = cfg.train.mode
        self.params = params
        self.opt = Sgd(cfg.lr, cfg.momentum if self.mode == "sync" else 0.0)
        self.outer = Sgd(cfg.outer_lr, cfg.outer_momentum, nesterov=True)
        self.combine = aggregate.rule(cfg.rule, cfg.byzantine)
        self.norms: list[float] = []        # async: the norms of the last updates (apply's clipping)

    def aggregate(self, payloads: list[Params]) -> None:
        rows = np.stack([flatten(p) for p in payloads])
        parts = self.cfg.train.param_shards
        combined = aggregate.by_parts(self.combine, rows, parts) if parts > 1 else self.combine(rows)
        mean = unflatten(combined, self.params)
        self.params = (self.opt.step(self.params, mean) if self.mode == "sync"
                       else outer_step(self.outer, self.params, mean))

    def apply(self, payload: Params, weight: float) -> None:
        """Async: one update as it arrives. With a robust rule (anything but the mean) there is nothing to
        aggregate it with, so its norm is clipped to the median norm of the last ``NORM_WINDOW`` updates
        (the parameters' norm before 5 are known; non-finite updates dropped): a liar's update can weigh
        no more than a typical honest one."""
        if self.cfg.rule != "mean":
            flat = flatten(payload)
            norm = float(np.linalg.norm(flat))
            if not np.isfinite(norm):
                return
            # until a few norms are known, the parameters' own norm bounds an update (a first liar is capped)
            usual = float(np.median(self.norms)) if len(self.norms) >= 5 else \
                min(norm, float(np.linalg.norm(flatten(self.params))))
            self.norms = (self.norms + [norm])[-NORM_WINDOW:]
            if norm > usual > 0:
                payload = unflatten(flat * (usual / norm), payload)
        self.params = {n: p - self.cfg.lr * weight * payload[n] for n, p in self.params.items()}

    def velocity(self) -> Params:
        """The optimiser state a checkpoint keeps (sync: the SGD momentum; local: the outer one)."""
        return dict(self.opt.velocity if self.mode == "sync" else self.outer.velocity)

    def set_velocity(self, velocity: Params) -> None:
        (self.opt if self.mode == "sync" else self.outer).velocity = dict(velocity)


def feeds(cfg: RunConfig, split: Split, task: Assign) -> dict[str, np.ndarray]:
    """The data of an assignment: its shard's minibatch (gradient) or ``steps`` minibatches stacked (local),
    fixed by (shard, round): whoever computes it draws the same examples."""
    x, y = shard(split.x_train, split.y_train, task.shard, cfg.train.shards)
    seed = cfg.seed + 1_000_003 * task.shard  # shard 0 draws the reference trainer's minibatches
    if task.kind == "gradient":
        idx = batch_indices(len(y), cfg.batch, task.round, seed)
    else:
        idx = np.concatenate([batch_indices(len(y), cfg.batch, task.round * task.steps + j, seed)
                              for j in range(task.steps)])
    return {"x": x[idx], "y": y[idx]}


def task_graph(cfg: RunConfig, task: Assign) -> Graph:
    """The opset-2 graph a peer runs for an assignment (outputs ``grad.<p>`` or ``delta.<p>``, and ``loss``)."""
    if task.kind == "gradient":
        return step_graph(cfg.model, cfg.batch)
    return local_graph(cfg.model, cfg.batch, task.steps, cfg.lr, cfg.momentum)


def payload_of(task: Assign, outputs: dict) -> Params:
    """The update in a graph's outputs: the gradients (``grad.<p>``) or the deltas (``delta.<p>``)."""
    prefix = "grad." if task.kind == "gradient" else "delta."
    return {n[len(prefix):]: v for n, v in outputs.items() if n.startswith(prefix)}


def work(cfg: RunConfig, model: Model, params: Params, split: Split, task: Assign) -> Params:
    """What a peer computes for an assignment: a gradient, or the delta after ``steps`` local steps."""
    if task.kind == "gradient":
        f = feeds(cfg, split, task)
        return loss_and_grads(model, params, f["x"], f["y"])[2]
    # H steps as one opset-2 graph (the task a peer runs): the same numbers as H step graphs + Sgd
    return payload_of(task, task_graph(cfg, task).run({**feeds(cfg, split, task), **params}))


def far_from(update: Params, recomputed: Params, rtol: float = 1e-3) -> bool:
    """A spot check's verdict: is ``update`` far from the coordinator's recomputation of it? (Relative
    distance over ``rtol``, a different set of arrays, or a non-finite value.) Honest peers' float
    differences between machines are far below 1e-3 of the norm."""
    if set(update) != set(recomputed):
        return True
    try:
        a, b = flatten(update), flatten(recomputed)
    except (ValueError, TypeError):
        return True
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return True
    return bool(np.linalg.norm(a - b) > rtol * max(float(np.linalg.norm(b)), 1e-12))


def attack(kind: str, payload: Params, rng: random.Random) -> Params:
    if kind == "sign_flip":
        return {n: -4.0 * v for n, v in payload.items()}
    if kind == "scaled":
        return {n: 1e4 * v for n, v in payload.items()}
    if kind == "biased":
        return {n: v + 0.05 * np.sign(v) for n, v in payload.items()}
    raise ValueError(f"unknown attack {kind!r}")
