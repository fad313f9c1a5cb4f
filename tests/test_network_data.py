"""Data across a devnet: add on one daemon, get on another (DHT providers + bitswap)."""

import json
import os
import subprocess
import sys
import time

import pytest

from p2pcompute.node.devnet import Devnet

CLI = [sys.executable, "-m", "p2pcompute"]


def run(*args, **kw):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, **kw)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """One 4-daemon devnet for this module (starting one costs seconds): each test adds its own random payload
    and gets through peers the other does not get through."""
    net = Devnet(tmp_path_factory.mktemp("net"), 4, log_level="warning")
    try:
        net.start()
        assert net.wait_connected(30)
        yield net
    finally:
        net.stop()


def test_a_file_added_on_one_peer_is_fetched_by_another_through_dht_and_bitswap(tmp_path, net):
    payload = os.urandom(3 * 256 * 1024 + 123)  # four blocks and a root
    (tmp_path / "data.bin").write_bytes(payload)
    adder, getter = net.peers[1], net.peers[3]
    added = run("add", str(tmp_path / "data.bin"), "--json", "--data-dir", str(adder.data_dir))
    assert added.returncode == 0, added.stderr
    info = json.loads(added.stdout)
    assert info["announced"]
    got = run("get", info["cid"], "-o", str(tmp_path / "copy.bin"), "--data-dir", str(getter.data_dir))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "copy.bin").read_bytes() == payload
    cat = subprocess.run(CLI + ["cat", info["cid"], "--data-dir", str(getter.data_dir)], capture_output=True,
                         timeout=60)
    assert cat.stdout == payload
    missing = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"  # "hello\n": nobody has it here
    res = run("get", missing, "-o", str(tmp_path / "none"), "--timeout", "3", "--data-dir", str(getter.data_dir))
    assert res.returncode == 1 and "Traceback" not in res.stderr


def wait_for(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_get_does_not_pin_get_pin_does_timeouts_are_one_line_and_a_cancelled_get_stops_the_daemon(tmp_path, net):
    from p2pcompute.node.client import ControlClient

    payload = os.urandom(2 * 256 * 1024 + 7)
    (tmp_path / "data.bin").write_bytes(payload)
    adder, getter = net.peers[2], net.peers[0]   # not the other test's getter: its bitswap sessions are ours
    added = run("add", str(tmp_path / "data.bin"), "--json", "--data-dir", str(adder.data_dir))
    cid = json.loads(added.stdout)["cid"]
    pins = lambda: json.loads(run("pin", "ls", "--json", "--data-dir", str(getter.data_dir)).stdout)["pins"]

    got = run("get", cid, "-o", str(tmp_path / "a.bin"), "--data-dir", str(getter.data_dir))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "a.bin").read_bytes() == payload and cid not in pins()  # get does not pin (as kubo)
    got = run("get", cid, "--pin", "-o", str(tmp_path / "b.bin"), "--data-dir", str(getter.data_dir))
    assert got.returncode == 0, got.stderr
    assert cid in pins()
    removed = run("pin", "rm", cid, "--data-dir", str(getter.data_dir))
    assert removed.returncode == 0 and cid not in pins()
    assert run("storage", "pins", "--json", "--data-dir", str(getter.data_dir)).returncode == 0  # the alias

    missing = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"  # "hello\n": nobody has it here
    res = run("cat", missing, "--timeout", "2", "--data-dir", str(getter.data_dir))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "not found within 2 s" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    res = run("fetch", f"ipfs://{missing}", "--timeout", "2", "--data-dir", str(getter.data_dir))
    assert res.returncode == 1 and "not found within 2 s" in res.stderr, res.stderr  # honoured for ipfs:// too

    # a get the user abandons stops the daemon's fetch: its bitswap session goes away
    daemon = ControlClient(getter.data_dir)
    sessions = lambda: daemon.status()["bitswap"]["sessions"]
    client = subprocess.Popen(CLI + ["get", missing, "--timeout", "300", "-o", str(tmp_path / "never"),
                                     "--data-dir", str(getter.data_dir)], stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: len(sessions()) == 1), "the daemon never started fetching"
    finally:
        client.kill()
        client.wait(timeout=30)
    assert wait_for(lambda: sessions() == []), sessions()
