"""What a user sees when the daemon cannot start or is handed bad input: one line, no traceback.

Real daemons as subprocesses, as a user runs them.
"""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

CLI = [sys.executable, "-m", "p2pcompute"]


def join(data_dir, *extra, timeout=60):
    return subprocess.run(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0", *extra],
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(res):
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and "Exception" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]


def start(data_dir, *extra):
    log = open(f"{data_dir}.log", "w")
    proc = subprocess.Popen(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0", *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not (data_dir / "api").exists():
        assert proc.poll() is None and time.monotonic() < deadline, open(f"{data_dir}.log").read()
        time.sleep(0.1)
    return proc


def stop(proc):
    proc.terminate()
    return proc.wait(timeout=30)


@pytest.mark.parametrize("text, key", [
    ("listen = 5", "listen"),
    ("cpus = 'nan'", "cpus"),
    ("max_connections = -1", "max_connections"),
    ("listen = ['/ip4/127.0.0.1/tcp/99999']", "listen"),
    ("api_port = 99999", "api_port"),
    ("dial_timeout = 'soon'", "dial_timeout"),
    ("labels = 3", "labels"),
])
def test_a_bad_config_file_stops_the_daemon_with_one_line_naming_key_and_file(tmp_path, text, key):
    (tmp_path / "config.toml").write_text(text + "\n")
    line = one_line_error(join(tmp_path))
    assert f" {key} " in line and str(tmp_path / "config.toml") in line


def test_a_busy_api_port_is_one_line_and_a_failed_join_leaves_no_identity(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        new_dir = tmp_path / "new"
        line = one_line_error(join(new_dir, "--api-port", str(port)))
        assert f"control API cannot listen on 127.0.0.1:{port}" in line
        assert not new_dir.exists()  # the dir this join made is gone again
        old_dir = tmp_path / "old"
        old_dir.mkdir(mode=0o700)
        (old_dir / "mine.txt").write_text("keep me")
        one_line_error(join(old_dir, "--api-port", str(port)))
        assert not (old_dir / "identity.key").exists()  # no new identity behind a failed join
        assert (old_dir / "mine.txt").read_text() == "keep me"


def test_a_corrupt_peers_json_is_a_warning_and_the_daemon_starts(tmp_path):
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o700)
    (data_dir / "peers.json").write_text("[" * 100_000 + "]" * 100_000)
    proc = start(data_dir)
    assert stop(proc) == 0
    log = open(f"{data_dir}.log").read()
    assert "ignoring unreadable" in log and "Traceback" not in log


def test_deeply_nested_json_to_the_control_api_is_a_400(tmp_path):
    data_dir = tmp_path / "d"
    proc = start(data_dir)
    try:
        url = (data_dir / "api").read_text().strip()
        token = (data_dir / "api_token").read_text().strip()
        resp = httpx.post(url + "/v1/ping", content=b"[" * 200_000 + b"]" * 200_000,
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert resp.status_code == 400 and "nested" in resp.json()["error"]
        assert httpx.get(url + "/v1/status", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        assert stop(proc) == 0


def test_secret_files_and_the_data_dir_are_kept_private(tmp_path):
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    # a stale api_token readable by all, left by an earlier run: replaced, not reused
    (data_dir / "api_token").write_text("stale\n")
    os.chmod(data_dir / "api_token", 0o644)
    proc = start(data_dir)
    try:
        assert data_dir.stat().st_mode & 0o777 == 0o700  # tightened, with a warning
        token = data_dir / "api_token"
        assert token.stat().st_mode & 0o777 == 0o600 and token.read_text().strip() != "stale"
    finally:
        assert stop(proc) == 0
    assert "was open to other users (mode 755): set it to 700" in open(f"{data_dir}.log").read()
    # a link key others can read is refused (as identity.key is), saying how to fix it
    os.chmod(data_dir / "link.key", 0o644)
    line = one_line_error(join(data_dir))
    assert "link.key is open to other users" in line and "chmod 600" in line


def test_a_connecting_peer_adds_at_most_one_info_line(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = start(a_dir)
    try:
        env_status = subprocess.run(CLI + ["status", "--json", "--data-dir", str(a_dir)], capture_output=True,
                                    text=True, timeout=60)
        boot = next(x for x in json.loads(env_status.stdout)["addresses"] if "/127.0.0.1/" in x)
        b = start(b_dir, "--bootstrap", boot)
        try:
            b_id = json.loads(subprocess.run(CLI + ["status", "--json", "--data-dir", str(b_dir)],
                                             capture_output=True, text=True, timeout=60).stdout)["peer_id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = json.loads(subprocess.run(CLI + ["peers", "--json", "--data-dir", str(a_dir)],
                                                 capture_output=True, text=True, timeout=60).stdout)
                if any(r["peer_id"] == b_id and r.get("state") == "alive" for r in rows):
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("b never became alive at a")
        finally:
            stop(b)
    finally:
        stop(a)
    lines = open(f"{a_dir}.log").read().splitlines()
    joined = [line for line in lines if b_id[-8:] in line and " INFO " in line and "-> left" not in line]
    assert len(joined) <= 1, joined


def test_failure_line_finds_the_cause_inside_trio_groups():
    from p2pcompute.cli.daemon import failure_line
    from p2pcompute.errors import UserError

    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [UserError("port 4001 is taken")])])
    assert failure_line(nested) == "port 4001 is taken"
    bug = ExceptionGroup("outer", [KeyError("x")])
    line = failure_line(bug)
    assert "unexpected error: KeyError" in line and "--log-level debug" in line and "\n" not in line
    oserror = ExceptionGroup("outer", [OSError(28, "No space left on device", "/d/peers.json")])
    assert failure_line(oserror) == "the daemon stopped: No space left on device (/d/peers.json)"
