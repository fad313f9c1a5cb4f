"""A daemon cannot offer more than its machine has (one clear line, nothing started)."""

import os
import subprocess
import sys

import pytest

from p2pcompute.node.config import default_cpus, machine_memory


def join(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "p2pcompute", "join", "--data-dir", str(tmp_path / "d"),
                           "--listen", "/ip4/127.0.0.1/tcp/0", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, figure", [
    (["--cpus", "512"], f"this machine has ({default_cpus():g})"),
    (["--memory", "999TiB"], f"this machine has ({machine_memory() / 2**30:.1f} GiB)"),
])
def test_an_offer_beyond_the_machine_is_refused(tmp_path, args, figure):
    res = join(tmp_path, *args)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    [line] = res.stderr.strip().splitlines()
    assert figure in line and "offer at most" in line
    assert not (tmp_path / "d").exists()  # refused before anything was made


def test_an_offer_beyond_the_machine_in_config_names_its_source(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "config.toml").write_text(f"cpus = {int(default_cpus()) + 1}\n")
    res = join(tmp_path)
    assert res.returncode == 1 and "config.toml" in res.stderr and "Traceback" not in res.stderr
    assert sorted(os.listdir(tmp_path / "d")) == ["config.toml"]
