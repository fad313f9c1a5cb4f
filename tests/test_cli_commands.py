"""The smaller commands and the command line's manners, against real daemons run as a user would."""

import json
import os
import subprocess
import sys
import time

import pytest

CLI = [sys.executable, "-m", "p2pcompute"]


def run(*args, env=None, timeout=60):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout, env=env)


def start(data_dir, *extra):
    log = open(f"{data_dir}.log", "w")
    proc = subprocess.Popen(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0",
                                   "--cpus", "1.5", *extra], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (data_dir / "api").exists():
        assert proc.poll() is None and time.monotonic() < deadline, open(f"{data_dir}.log").read()
        time.sleep(0.1)
    return proc


def test_commands_against_two_daemons(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a, b = start(a_dir), start(b_dir)
    try:
        # global options work before the command (as the README writes it) and after it
        before = run("--data-dir", str(a_dir), "--json", "id")
        after = run("id", "--json", "--data-dir", str(a_dir))
        assert before.returncode == 0, before.stderr
        a_id = json.loads(before.stdout)
        assert json.loads(after.stdout) == a_id and a_id["peer_id"].startswith("12D3KooW")
        assert any("/127.0.0.1/" in x for x in a_id["addresses"])
        b_id = json.loads(run("--data-dir", str(b_dir), "id", "--json").stdout)

        # connect: b was started alone; connecting it to a makes them peers
        addr = next(x for x in a_id["addresses"] if "/127.0.0.1/" in x)
        res = run("connect", addr, "--data-dir", str(b_dir))
        assert res.returncode == 0 and a_id["peer_id"] in res.stdout, res.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = json.loads(run("--data-dir", str(a_dir), "peers", "--json").stdout)
            if any(r["peer_id"] == b_id["peer_id"] and r["connected"] for r in rows):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"connect did not connect: {rows}")

        # an 80-column table never cuts peer IDs into look-alikes: each shown form is unique and whole
        table = run("peers", "--data-dir", str(a_dir), env=dict(os.environ, COLUMNS="80")).stdout
        assert all(len(line) <= 80 for line in table.splitlines()), table
        assert f"12D3Koo…{b_id['peer_id'][-6:]}" in table

        # config show reports what the running daemon uses (its flags), not the defaults
        rows = json.loads(run("config", "show", "--json", "--data-dir", str(a_dir)).stdout)
        assert rows["cpus"] == {"value": 1.5, "source": "flag"}
        assert "running" in run("config", "show", "--data-dir", str(a_dir)).stdout

        # errors say what failed in the command's words, not the API route
        typo = run("cat", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbd", "--data-dir", str(a_dir))
        assert typo.returncode == 1 and "not a valid CID" in typo.stderr and "46 characters" in typo.stderr
        assert "multibase" not in typo.stderr and "/v1/" not in typo.stderr
        bad = run("connect", "/ip4/127.0.0.1/tcp/1", "--data-dir", str(a_dir))
        assert bad.returncode == 1 and "connect failed" in bad.stderr and "/v1/" not in bad.stderr

        # stop: the daemon exits cleanly and stop returns only once it has
        res = run("stop", "--data-dir", str(b_dir))
        assert res.returncode == 0, res.stderr
        assert b.poll() == 0  # already exited when stop returned
        assert not (b_dir / "api").exists() and not (b_dir / "api_token").exists()
        again = run("stop", "--data-dir", str(b_dir))
        assert again.returncode == 1 and "no daemon is running" in again.stderr
        assert run("--data-dir", str(a_dir), "stop").returncode == 0 and a.poll() == 0
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()


@pytest.mark.parametrize("shell, marker", [("bash", "complete "), ("zsh", "#compdef p2pcompute")])
def test_shell_completion_scripts(tmp_path, shell, marker):
    res = run("completion", shell)
    assert res.returncode == 0 and marker in res.stdout
    for command in ("join", "stop", "connect", "peers", "--data-dir"):
        assert command in res.stdout
    if shell == "bash":
        script = tmp_path / "p2pcompute.bash"
        script.write_text(res.stdout)
        check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_ops_list_keeps_brackets_and_colons_from_markup():
    out = run("ops", "list", env=dict(os.environ, COLUMNS="300")).stdout
    assert "[min, max]" in out and "x[start:end:step]" in out


def test_shortened_peer_ids_stay_unique():
    from p2pcompute.cli.output import peer_labels

    a = "12D3KooWAbcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNxQQQQQQ"
    b = "12D3KooWAbcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNyQQQQQQ"  # same last 6 characters
    labels = peer_labels([a, b, a], width=80)
    assert labels[a] != labels[b] and labels[a].startswith("12D3Koo…") and labels[a].endswith("xQQQQQQ")
    assert peer_labels([a, b], width=200) == {a: a, b: b}  # wide screens show them whole
