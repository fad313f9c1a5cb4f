"""A WebAssembly program named by its CID (program: ipfs://...), read from the data dir's blockstore."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import p2pcompute.ops as ops_pkg
from p2pcompute.ops import tensor_format

CLI = [sys.executable, "-m", "p2pcompute"]


def run(*args, cwd=None, env=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_program_by_cid_runs_like_the_file(tmp_path):
    data_dir = tmp_path / "home"
    wat = Path(ops_pkg.__file__).with_name("cloud_detect.wat")
    added = run("add", str(wat), "--data-dir", str(data_dir), "--json")
    assert added.returncode == 0, added.stderr
    cid = json.loads(added.stdout)["cid"]
    rng = np.random.default_rng(4)
    bands = {name: rng.integers(0, 6000, (16, 16), dtype=np.uint16) for name in ("blue", "green", "red", "nir", "swir1")}
    for name, array in bands.items():
        tensor_format.write_file(tmp_path / f"{name}.tensor", array)
    inputs = "\n".join(f"  {n}: {{path: {n}.tensor}}" for n in bands)
    (tmp_path / "job.yaml").write_text(
        f"inputs:\n{inputs}\nprogram: ipfs://{cid}\noutputs: {{dir: out, formats: {{cloud_fraction: tensor}}}}\n")
    tmp = tmp_path / "tmp"  # the runs' temporary files go here, and must not stay
    tmp.mkdir()
    res = run("run", "job.yaml", "--local", "--json", "--data-dir", str(data_dir), cwd=tmp_path,
              env=dict(os.environ, TMPDIR=str(tmp)))
    assert res.returncode == 0, res.stderr
    assert list(tmp.iterdir()) == []
    by_cid = tensor_format.read_file(tmp_path / "out" / "cloud_fraction.tensor")
    (tmp_path / "job1.yaml").write_text(
        f"inputs:\n{inputs}\nprogram: builtin:cloud_detect.wat\noutputs: {{dir: out1, formats: {{cloud_fraction: tensor}}}}\n")
    assert run("run", "job1.yaml", "--local", cwd=tmp_path).returncode == 0
    by_file = tensor_format.read_file(tmp_path / "out1" / "cloud_fraction.tensor")
    assert 0.0 < float(by_cid) < 1.0 and by_cid.tobytes() == by_file.tobytes()

    missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    (tmp_path / "job2.yaml").write_text(f"inputs:\n{inputs}\nprogram: ipfs://{missing}\n")
    res = run("run", "job2.yaml", "--local", "--data-dir", str(data_dir), cwd=tmp_path)
    assert res.returncode == 1 and "p2pcompute add" in res.stderr and "Traceback" not in res.stderr


def test_a_program_by_cid_leaves_no_temporary_file_when_the_job_fails(tmp_path):
    data_dir = tmp_path / "home"
    added = run("add", str(Path(ops_pkg.__file__).with_name("cloud_detect.wat")), "--data-dir", str(data_dir),
                "--json")
    cid = json.loads(added.stdout)["cid"]
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    (tmp_path / "bad.yaml").write_text(f"program: ipfs://{cid}\nargs: {{not: a list}}\n")  # fails after the fetch
    res = run("run", "bad.yaml", "--local", "--data-dir", str(data_dir), cwd=tmp_path, env=env)
    assert res.returncode == 1 and "args" in res.stderr
    (tmp_path / "short.yaml").write_text(f"program: ipfs://{cid}\n")  # fails running (no inputs)
    res = run("run", "short.yaml", "--local", "--data-dir", str(data_dir), cwd=tmp_path, env=env)
    assert res.returncode == 1 and "job short: failed" in res.stdout
    assert list(tmp.iterdir()) == []
