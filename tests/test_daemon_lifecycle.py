"""Stopping daemons and devnets as users and service managers do: signals to real subprocesses."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

CLI = [sys.executable, "-m", "p2pcompute"]


def wait_for(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_stops_a_devnet_and_every_peer_and_json_stays_clean(tmp_path):
    proc = subprocess.Popen(CLI + ["devnet", "--peers", "2", "--json", "--dir", str(tmp_path), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        peers = [tmp_path / "peer0", tmp_path / "peer1"]

        def daemon_pids():
            pids = []
            for d in peers:
                try:
                    pid = (d / "daemon.lock").read_text().strip()
                except OSError:
                    return None
                if not pid or not (d / "api").exists():
                    return None
                pids.append(int(pid))
            return pids

        pids = wait_for(daemon_pids, 120, "both peers to serve")
        # the JSON is printed once every peer sees the other; SIGTERM after it
        text = ""
        while not text.endswith("]\n"):
            line = proc.stdout.readline()
            assert line, "devnet ended its output before the JSON"
            text += line
        proc.send_signal(signal.SIGTERM)
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    rows = json.loads(text)
    assert out == ""  # stdout holds the JSON and nothing else
    assert len(rows) == 2
    assert "stopping" in err
    for pid in pids:
        assert not alive(pid), f"peer daemon {pid} outlived its devnet"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_daemon_stopped_by_a_signal_removes_its_api_files(tmp_path, signum):
    data_dir = tmp_path / "d"
    proc = subprocess.Popen(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (data_dir / "api").exists(), 60, "the daemon to serve")
        assert (data_dir / "api_token").stat().st_mode & 0o777 == 0o600
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert not (data_dir / "api").exists() and not (data_dir / "api_token").exists()
    assert (data_dir / "identity.key").exists()  # a daemon that served keeps its identity


# The daemon's signal watcher in a process whose clean shutdown never ends (as when a peer or a
# task hangs): the first SIGTERM asks for a clean stop, the second must end the process at once.
STUCK_SHUTDOWN = textwrap.dedent("""
    import logging, sys, trio
    from pathlib import Path
    from p2pcompute.node.daemon import _watch_signals

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    files = (Path(sys.argv[1]),)

    async def main():
        async with trio.open_nursery() as outer:
            shutdown = trio.CancelScope()
            await outer.start(_watch_signals, shutdown, files)
            with shutdown:
                print("ready", flush=True)
                await trio.sleep_forever()
            with trio.CancelScope(shield=True):
                await trio.sleep_forever()  # a cleanup that hangs

    trio.run(main)
""")


def test_a_second_sigterm_exits_at_once_and_says_so(tmp_path):
    api = tmp_path / "api"
    api.write_text("http://127.0.0.1:1\n")
    proc = subprocess.Popen([sys.executable, "-c", STUCK_SHUTDOWN, str(api)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        lines = []
        wait_for(lambda: lines.append(proc.stderr.readline()) or "send it again" in lines[-1], 30,
                 "the first signal to be taken")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "exiting now" in err
    assert not api.exists()


def test_peers_of_a_killed_devnet_stop_by_themselves(tmp_path):
    proc = subprocess.Popen(CLI + ["devnet", "--peers", "2", "--json", "--dir", str(tmp_path), "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        text = ""
        while not text.endswith("]\n"):
            line = proc.stdout.readline()
            assert line, "devnet ended its output before the JSON"
            text += line
        pids = [int((tmp_path / f"peer{i}" / "daemon.lock").read_text()) for i in range(2)]
        proc.kill()  # no chance to stop its peers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_for(lambda: not any(alive(pid) for pid in pids), 60, "the orphaned peers to stop")
    for i in range(2):  # a clean stop, not a kill: the api files are gone
        assert not (tmp_path / f"peer{i}" / "api").exists()
        assert "parent process" in (tmp_path / f"peer{i}" / "daemon.log").read_text()
