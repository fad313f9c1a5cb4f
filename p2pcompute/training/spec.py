"""train.yaml -> ``TrainSpec``: the model, the dataset, the optimiser, the mode and the schedule.

A train.yaml (examples/digits.train.yaml is the worked example)::

    name: digits-mlp
    dataset: digits              # built in (scikit-learn's handwritten digits, no download)
    seed: 0                      # data split, initial parameters, minibatches
    model: {mlp: {hidden: [32]}} # or: linear
    mode: sync                   # sync | local | async
    peers: 4                     # training starts once this many peers (this one included) are up
    shards: 4                    # updates per round
    rounds: 150
    batch: 32                    # examples per shard and step
    optimizer: {lr: 0.1, momentum: 0.9}
    local: {steps: 20, outer_lr: 0.7, outer_momentum: 0.9}   # mode local (DiLoCo)
    async: {staleness_bound: 4}                               # mode async
    aggregation: {rule: mean, tolerate: 0}   # mean | median | trimmed_mean | centered_clip
    checkpoint_every: 25         # rounds; 0: none
    task_timeout: 120            # seconds before an unanswered shard goes to another peer
    param_shards: 1              # sync/local: parts of the parameter vector, each aggregated on its own peer
    peer_memory: 0               # bytes a peer may hold to aggregate (0: no limit); too little -> refused
    spot_check: 0.0              # share of gradient tasks also run on this (trusted) peer and compared

``dataset: synthetic`` is a seeded classification problem made by
scikit-learn's ``make_classification`` (no download), sized by
``synthetic: {examples, features, classes, informative}``
(examples/synthetic-linear.train.yaml). With ``param_shards: P`` each round's
aggregate is P tasks, task i placed on the live peer XOR-closest to part i's
key (driver.py); ``peer_memory`` is checked here: a configuration whose
aggregation does not fit is refused with ``ShardingNeeded``'s message (the
parts it needs).

Every key but ``dataset`` has a default. ``parse(text)`` returns the spec or
raises ``UserError`` listing every problem with its key; nothing else is
accepted (an unknown key is a problem, so that a typo is not silently ignored).
``to_dict`` / ``from_dict`` carry the spec to the daemon and into checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import UserError
from .aggregate import RULES
from .coordinator import MODES, TrainConfig
from .inprocess import RunConfig
from .model import Model

DATASETS = ("digits", "synthetic")
TOP_KEYS = {"name", "dataset", "seed", "model", "mode", "peers", "shards", "rounds", "batch", "optimizer", "local",
            "async", "aggregation", "checkpoint_every", "task_timeout", "param_shards", "peer_memory", "spot_check",
            "synthetic"}
MAX_SYNTHETIC_VALUES = 64 << 20        # examples x features of a synthetic dataset (512 MB of float64)
MAX_ROUNDS = 100_000
MAX_SHARDS = 1024
MAX_LOCAL_STEPS = 250        # the local graph unrolls its steps (model.local_graph: MAX_NODES)
MAX_HIDDEN = 4096


@dataclass(frozen=True)
class TrainSpec:
    name: str
    dataset: str
    seed: int
    hidden: tuple[int, ...] | None      # None: linear
    mode: str
    peers: int
    shards: int
    rounds: int
    batch: int
    lr: float
    momentum: float
    local_steps: int
    outer_lr: float
    outer_momentum: float
    staleness_bound: int
    rule: str
    tolerate: int
    checkpoint_every: int
    task_timeout: float
    source: dict = field(default_factory=dict, compare=False)
    param_shards: int = 1
    peer_memory: int = 0
    spot_check: float = 0.0
    synthetic: tuple[int, int, int, int] = (0, 0, 0, 0)   # examples, features, classes, informative

    def shape(self) -> tuple[int, int]:
        """(features, classes) of the dataset."""
        return (self.synthetic[1], self.synthetic[2]) if self.dataset == "synthetic" else (64, 10)

    def model(self, features: int | None = None, classes: int | None = None) -> Model:
        f, c = self.shape()
        return Model(features or f, self.hidden or (), classes or c)

    def run_config(self, features: int | None = None, classes: int | None = None) -> RunConfig:
        """The in-process runner's configuration with the same numbers (the comparison run)."""
        train = TrainConfig(self.mode, shards=self.shards, rounds=self.rounds, local_steps=self.local_steps,
                            staleness_bound=self.staleness_bound, checkpoint_every=self.checkpoint_every,
                            task_timeout=self.task_timeout, min_peers=self.peers, param_shards=self.param_shards,
                            peer_memory=self.peer_memory, run=self.name)   # spot checks: the scheduler's
        return RunConfig(train, model=self.model(features, classes), peers=self.peers, batch=self.batch, lr=self.lr,
                         momentum=self.momentum, outer_lr=self.outer_lr, outer_momentum=self.outer_momentum,
                         rule=self.rule, byzantine=self.tolerate, seed=self.seed)

    def to_dict(self) -> dict:
        return dict(self.source)


def parse(text: str) -> TrainSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"train.yaml is not valid YAML: {exc}") from None
    return from_dict(data)


def from_dict(data: Any) -> TrainSpec:
    if not isinstance(data, dict):
        raise UserError("train.yaml must be a mapping of keys (name, dataset, model, mode, ...)")
    problems: list[str] = []
    for key in sorted(set(map(str, data)) - TOP_KEYS):
        problems.append(f"{key}: unknown key (known: {', '.join(sorted(TOP_KEYS))})")

    def sub(key: str, known: set[str]) -> dict:
        value = data.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            problems.append(f"{key}: must be a mapping")
            return {}
        for k in sorted(set(map(str, value)) - known):
            problems.append(f"{key}.{k}: unknown key (known: {', '.join(sorted(known))})")
        return value

    def num(where: str, value: Any, lo: float, hi: float, integer: bool) -> Any:
        ok = (type(value) is int) if integer else (type(value) in (int, float) and math.isfinite(value))
        if not ok or not lo <= value <= hi:
            problems.append(f"{where}: {value!r} must be {'a whole number' if integer else 'a number'} "
                            f"in [{lo:g}, {hi:g}]")
            return lo
        return value

    name = data.get("name", "train")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        problems.append("name: 1 to 64 characters")
        name = "train"
    dataset = data.get("dataset")
    if dataset not in DATASETS:
        problems.append(f"dataset: {dataset!r} is not one of the built-in datasets ({', '.join(DATASETS)})")
    model = data.get("model", {"mlp": {"hidden": [32]}})
    hidden: tuple[int, ...] | None = (32,)
    if model == "linear":
        hidden = None
    elif isinstance(model, dict) and set(model) == {"mlp"} and isinstance(model["mlp"], dict) \
            and set(model["mlp"]) <= {"hidden"}:
        layers = model["mlp"].get("hidden", [32])
        if not isinstance(layers, list) or not 1 <= len(layers) <= 8:
            problems.append("model.mlp.hidden: a list of 1 to 8 layer sizes")
        else:
            hidden = tuple(num(f"model.mlp.hidden[{i}]", h, 1, MAX_HIDDEN, True) for i, h in enumerate(layers))
    else:
        problems.append("model: `linear` or {mlp: {hidden: [sizes]}}")
    mode = data.get("mode", "sync")
    if mode not in MODES:
        problems.append(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    opt = sub("optimizer", {"lr", "momentum"})
    local = sub("local", {"steps", "outer_lr", "outer_momentum"})
    asyn = sub("async", {"staleness_bound"})
    agg = sub("aggregation", {"rule", "tolerate"})
    rule = agg.get("rule", "mean")
    if rule not in RULES:
        problems.append(f"aggregation.rule: {rule!r} is not one of {', '.join(RULES)}")
    spec = TrainSpec(
        name=name, dataset=str(dataset), seed=num("seed", data.get("seed", 0), 0, 2**32 - 1, True), hidden=hidden,
        mode=str(mode), peers=num("peers", data.get("peers", 1), 1, 10_000, True),
        shards=num("shards", data.get("shards", 4), 1, MAX_SHARDS, True),
        rounds=num("rounds", data.get("rounds", 100), 1, MAX_ROUNDS, True),
        batch=num("batch", data.get("batch", 32), 1, 4096, True),
        lr=num("optimizer.lr", opt.get("lr", 0.1), 1e-9, 100.0, False),
        momentum=num("optimizer.momentum", opt.get("momentum", 0.9), 0.0, 0.999, False),
        local_steps=num("local.steps", local.get("steps", 20), 1, MAX_LOCAL_STEPS, True),
        outer_lr=num("local.outer_lr", local.get("outer_lr", 0.7), 1e-9, 100.0, False),
        outer_momentum=num("local.outer_momentum", local.get("outer_momentum", 0.9), 0.0, 0.999, False),
        staleness_bound=num("async.staleness_bound", asyn.get("staleness_bound", 4), 0, 1000, True),
        rule=str(rule), tolerate=num("aggregation.tolerate", agg.get("tolerate", 0), 0, MAX_SHARDS, True),
        checkpoint_every=num("checkpoint_every", data.get("checkpoint_every", 0), 0, MAX_ROUNDS, True),
        task_timeout=num("task_timeout", data.get("task_timeout", 120.0), 1.0, 86_400.0, False),
        source={k: v for k, v in data.items()},
        param_shards=num("param_shards", data.get("param_shards", 1), 1, 1024, True),
        peer_memory=num("peer_memory", data.get("peer_memory", 0), 0, 2**50, True),
        spot_check=num("spot_check", data.get("spot_check", 0.0), 0.0, 1.0, False),
        synthetic=_synthetic(dataset, sub("synthetic", {"examples", "features", "classes", "informative"}), num,
                             problems))
    _sharding_problems(spec, problems)
    if spec.rule == "trimmed_mean" and 2 * max(1, spec.tolerate) >= spec.shards:
        problems.append(f"aggregation.tolerate: a trimmed mean over {spec.shards} shards cannot trim "
                        f"{max(1, spec.tolerate)} from each end")
    if problems:
        raise UserError("train.yaml: " + "; ".join(problems))
    return spec


def _synthetic(dataset: Any, syn: dict, num: Any, problems: list[str]) -> tuple[int, int, int, int]:
    if dataset != "synthetic":
        if syn:
            problems.append("synthetic: only with dataset: synthetic")
        return (0, 0, 0, 0)
    examples = num("synthetic.examples", syn.get("examples", 5000), 20, 10_000_000, True)
    features = num("synthetic.features", syn.get("features", 100), 2, 1_000_000, True)
    classes = num("synthetic.classes", syn.get("classes", 10), 2, 1000, True)
    informative = num("synthetic.informative", syn.get("informative", min(features, 20)), 1, features, True)
    if examples * features > MAX_SYNTHETIC_VALUES:
        problems.append(f"synthetic: {examples} x {features} values, at most {MAX_SYNTHETIC_VALUES}")
    return (examples, features, classes, informative)


def _sharding_problems(spec: TrainSpec, problems: list[str]) -> None:
    """param_shards / peer_memory / spot_check against the mode and the rule; the memory check
    (``sharding.check_fits``: ``ShardingNeeded``'s message, naming the parts needed)."""
    from .sharding import ShardingNeeded, check_fits

    if spec.param_shards > 1 and spec.mode == "async":
        problems.append("param_shards: needs mode sync or local (async applies each update alone)")
    if spec.param_shards > 1 and spec.rule != "mean":
        problems.append(f"param_shards: the parts are aggregated on peers by the mean only (aggregation.rule "
                        f"{spec.rule!r} runs on the coordinator: leave param_shards at 1)")
    if spec.mode == "async":
        return
    try:
        model = spec.model()
        if spec.param_shards > model.param_count():
            problems.append(f"param_shards: {spec.param_shards} parts of {model.param_count()} parameters")
            return
        check_fits(model.param_count() * 8, spec.shards, spec.param_shards, spec.peer_memory)
    except ShardingNeeded as exc:
        problems.append(f"peer_memory: {exc}")
    except ValueError:
        pass      # a bad layer size, reported with its key already
