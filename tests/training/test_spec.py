"""train.yaml parsing: the examples parse; every problem is named with its key; nothing unknown passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pcompute.errors import UserError
from p2pcompute.training.spec import parse

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.train.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_examples_parse(path):
    spec = parse(path.read_text())
    cfg = spec.run_config()
    assert cfg.train.mode == spec.mode and cfg.train.min_peers == spec.peers == cfg.peers


def test_defaults_and_a_linear_model():
    spec = parse("dataset: digits\nmodel: linear\n")
    assert spec.hidden is None and spec.model().hidden == () and spec.mode == "sync" and spec.rounds == 100


@pytest.mark.parametrize("text, words", [
    ("dataset: mnist", ["dataset"]),
    ("dataset: digits\nmode: fast", ["mode"]),
    ("dataset: digits\nrounds: 0\nshards: x", ["rounds", "shards"]),
    ("dataset: digits\noptimiser: {lr: 1}", ["optimiser: unknown key"]),
    ("dataset: digits\noptimizer: {lr: .nan}", ["optimizer.lr"]),
    ("dataset: digits\nlocal: {steps: 1000}", ["local.steps"]),
    ("dataset: digits\nmodel: {mlp: {hidden: [0]}}", ["model.mlp.hidden[0]"]),
    ("dataset: digits\nshards: 4\naggregation: {rule: trimmed_mean, tolerate: 2}", ["aggregation.tolerate"]),
    ("dataset: digits\naggregation: {rule: krum}", ["aggregation.rule"]),
    ("[1, 2]", ["mapping"]),
    ("a: [", ["YAML"]),
])
def test_problems_are_named(text, words):
    with pytest.raises(UserError) as info:
        parse(text)
    for w in words:
        assert w in str(info.value)
