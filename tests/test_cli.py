"""The command line as a user runs it: daemons as subprocesses, commands against them."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

CLI = [sys.executable, "-m", "p2pcompute"]


def run(*args, env=None, timeout=60):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout, env=env)


def start_daemon(data_dir, *extra):
    log = open(data_dir.parent / f"{data_dir.name}.log", "w")
    proc = subprocess.Popen(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0",
                                   "--cpus", "1.5", "--memory", "1GiB", "--label", "role=test", *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (data_dir / "api").exists():
            res = run("status", "--json", "--data-dir", str(data_dir))
            if res.returncode == 0:
                return proc, json.loads(res.stdout)
        assert proc.poll() is None, (data_dir.parent / f"{data_dir.name}.log").read_text()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("daemon did not start")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


def test_join_status_peers_between_two_daemons(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a, a_status = start_daemon(a_dir)
    try:
        boot = next(x for x in a_status["addresses"] if "/127.0.0.1/" in x)
        b, b_status = start_daemon(b_dir, "--bootstrap", boot)
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                peers = json.loads(run("peers", "--json", "--data-dir", str(b_dir)).stdout)
                if peers and peers[0]["connected"] and peers[0]["cpus"] is not None:
                    break
                time.sleep(0.2)
            assert peers[0]["peer_id"] == a_status["peer_id"]
            assert peers[0]["cpus"] == 1.5 and peers[0]["memory"] == 1 << 30 and peers[0]["labels"] == {"role": "test"}
            # the human-readable forms work too, and find the daemon through P2PCOMPUTE_HOME
            env = dict(os.environ, P2PCOMPUTE_HOME=str(a_dir))
            text = run("peers", env=env)
            assert text.returncode == 0 and b_status["peer_id"] in text.stdout
            status = run("status", env=env)
            assert "1 connected" in status.stdout and a_status["peer_id"] in status.stdout
            ping = json.loads(run("ping", b_status["peer_id"], "-n", "2", "--json", env=env).stdout)
            assert len(ping) == 2 and all(p["rtt_ms"] > 0 for p in ping)
            assert (b_dir / "identity.key").stat().st_mode & 0o777 == 0o600
            assert (b_dir / "api_token").stat().st_mode & 0o777 == 0o600
        finally:
            assert stop(b) == 0
        assert not (b_dir / "api").exists()  # removed on clean shutdown
        # same key, same ID after a restart; it rejoins from peers.json with no --bootstrap
        saved = json.loads((b_dir / "peers.json").read_text())["peers"]
        assert a_status["peer_id"] in [row["peer_id"] for row in saved]
        b2, b2_status = start_daemon(b_dir)
        assert b2_status["peer_id"] == b_status["peer_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            peers = json.loads(run("peers", "--json", "--data-dir", str(b_dir)).stdout)
            if any(p["peer_id"] == a_status["peer_id"] and p["connected"] for p in peers):
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"restarted peer did not rejoin: {peers}")
        # a second daemon on the same data dir is refused clearly
        clash = run("join", "--data-dir", str(b_dir), "--listen", "/ip4/127.0.0.1/tcp/0", timeout=30)
        assert clash.returncode == 1 and "another daemon" in clash.stderr
        stop(b2)
    finally:
        stop(a)


def test_commands_without_a_daemon_say_how_to_start_one(tmp_path):
    res = run("status", "--data-dir", str(tmp_path))
    assert res.returncode == 1
    assert "no daemon is running" in res.stderr and "p2pcompute join" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--bootstrap", "/ip4/127.0.0.1/tcp/4001"], "no /p2p/<peer ID> part"),
    (["--bootstrap", "not-an-address"], "not a valid multiaddr"),
    (["--memory", "plenty"], "is not a size"),
])
def test_bad_join_input_is_a_clear_error(tmp_path, args, message):
    res = run("join", "--data-dir", str(tmp_path), "--listen", "/ip4/127.0.0.1/tcp/0", *args, timeout=30)
    assert res.returncode == 1
    assert message in res.stderr and "Traceback" not in res.stderr


def test_an_address_this_host_cannot_listen_on_is_a_clear_error(tmp_path):
    res = run("join", "--data-dir", str(tmp_path), "--listen", "/ip4/192.0.2.1/tcp/4001", timeout=30)
    assert res.returncode == 1
    assert "cannot listen on /ip4/192.0.2.1/tcp/4001" in res.stderr and "Traceback" not in res.stderr


def test_help_explains_every_command():
    res = run("--help")
    for command in ("join", "status", "peers", "devnet", "demo", "config"):
        assert command in res.stdout
    join_help = run("join", "--help").stdout
    for option in ("--listen", "--bootstrap", "--data-dir", "--cpus", "--memory", "--label", "--api-port"):
        assert option in join_help


def test_config_show_reports_sources(tmp_path):
    (tmp_path / "config.toml").write_text("cpus = 3\n")
    env = dict(os.environ, P2PCOMPUTE_LOG_LEVEL="warning")
    res = run("config", "show", "--json", "--data-dir", str(tmp_path), env=env)
    rows = json.loads(res.stdout)
    assert rows["cpus"]["value"] == 3.0 and rows["cpus"]["source"].endswith("config.toml")
    assert rows["log_level"] == {"value": "warning", "source": "env"}


def test_demo_adds_a_scene_on_one_peer_and_its_job_submitted_to_another_runs_where_the_scene_is(tmp_path):
    # the demo's job on a smaller scene and fewer peers (the real demo: 10 peers, a 1024 px, 10.5 MB scene)
    res = run("demo", "--json", "--peers", "4", "--scene-size", "256", "-o", str(tmp_path), timeout=240)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert len(report["peers"]) == 4
    assert all(row["state"] == "alive" for row in report["membership"]["peer0_view"])
    scene, job = report["scene"], report["job"]
    assert scene["holder"] != scene["submitter"] and scene["size_px"] == 256
    assert scene["holder"] in scene["providers_found_by_submitter"]        # found in the DHT
    assert report["compute"]["identical"]
    assert job["state"] == "done" and job["tasks"] == 1 and job["submitted_to"] == scene["submitter"], job
    assert job["ran_on"] == scene["holder"] and job["ran_on_holder"], job  # run where the scene is
    assert abs(job["cloud_fraction"] - scene["expected_fraction"]) < 1e-9 and job["correct"]
    assert (tmp_path / "cloud-mask.png").read_bytes().startswith(b"\x89PNG")
    assert set(job["outputs"]) == {"mask", "cloud_fraction"} and all(job["outputs"].values())
    assert "stop the daemons" in report["timings_s"] and report["wall_seconds"] > 0
