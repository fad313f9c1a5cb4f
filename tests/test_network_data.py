"""Data across a devnet: add on one daemon, get on another (DHT providers + bitswap)."""

import json
import os
import subprocess
import sys

from p2pcompute.node.devnet import Devnet

CLI = [sys.executable, "-m", "p2pcompute"]


def run(*args, **kw):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, **kw)


def test_a_file_added_on_one_peer_is_fetched_by_another_through_dht_and_bitswap(tmp_path):
    payload = os.urandom(3 * 256 * 1024 + 123)  # four blocks and a root
    (tmp_path / "data.bin").write_bytes(payload)
    net = Devnet(tmp_path / "net", 4, log_level="warning")
    try:
        net.start()
        assert net.wait_connected(30)
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
        res = run("get", missing, "-o", str(tmp_path / "none"), "--data-dir", str(getter.data_dir))
        assert res.returncode == 1 and "Traceback" not in res.stderr
    finally:
        net.stop()
