"""`p2pcompute train` on a real devnet (three daemons, subprocesses, the default services): the CLI posts a
small train.yaml to one daemon, its TrainingService runs every gradient as a job over the peers, the CLI
writes report.json and curve.png; the accuracy is the in-process run's with the same seed; the final
checkpoint's CID resumes for more rounds. (slow: a daemon SIGKILLed mid-training.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from p2pcompute.node.devnet import Devnet
from p2pcompute.training import data
from p2pcompute.training.inprocess import run as run_inprocess
from p2pcompute.training.spec import parse

SPEC = """
name: tiny
dataset: digits
seed: 2
model: {mlp: {hidden: [16]}}
mode: sync
peers: 3
shards: 3
rounds: %d
batch: 32
checkpoint_every: 2
"""


def cli(args: list[str], cwd: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "p2pcompute", *args, "--json"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout)


def test_train_on_three_daemons_matches_the_inprocess_run_and_resumes(tmp_path):
    net = Devnet(tmp_path / "net", 3, log_level="warning")
    try:
        net.start(timeout=120)
        assert net.wait_connected(60)
        (tmp_path / "t3.yaml").write_text(SPEC % 3)
        (tmp_path / "t5.yaml").write_text(SPEC % 5)
        peer0 = str(net.peers[0].data_dir)
        first = cli(["train", "t3.yaml", "--data-dir", peer0, "--out", "out3"], tmp_path)
        assert first["state"] == "done", first["error"]
        assert first["rounds"] == 3 and first["jobs"] == 3 and first["peers_seen"] >= 2
        assert (tmp_path / "out3" / "curve.png").stat().st_size > 1000
        assert json.loads((tmp_path / "out3" / "report.json").read_text())["final"] == first["final"]
        split = data.digits(2)
        expected = run_inprocess(parse(SPEC % 3).run_config(), split)
        assert first["final_accuracy"] == expected.test_accuracy
        assert first["bytes_moved"] == expected.bytes_moved

        more = cli(["train", "t5.yaml", "--data-dir", peer0, "--out", "out5", "--resume", first["final"]], tmp_path)
        assert more["state"] == "done", more["error"]
        assert more["rounds"] == 5 and more["jobs"] == 2
        assert more["final_accuracy"] == run_inprocess(parse(SPEC % 5).run_config(), split).test_accuracy
    finally:
        net.stop()


@pytest.mark.slow
def test_a_daemon_killed_mid_training_changes_nothing(tmp_path):
    """SIGKILL one of three daemons mid-training: tasks it held run again elsewhere (after the
    lease lapses, about 30 s), the rounds complete, and the model is the in-process run's."""
    from p2pcompute.node.client import ControlClient

    net = Devnet(tmp_path / "net", 3, log_level="warning")
    try:
        net.start(timeout=120)
        assert net.wait_connected(60)
        client = ControlClient(net.peers[0].data_dir, timeout=60)
        text = SPEC % 8
        run_id = client._call("POST", "/v1/train", json={"spec": text})["id"]
        deadline = time.monotonic() + 120
        while client._call("GET", f"/v1/train/{run_id}")["round"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        net.peers[2].process.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 300
        while (st := client._call("GET", f"/v1/train/{run_id}"))["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert st["state"] == "done", st["error"]
        assert st["round"] == 8
        split = data.digits(2)
        assert st["accuracy"] == run_inprocess(parse(text).run_config(), split).test_accuracy
    finally:
        net.stop()
