"""A user's own kubo as a data source of a real daemon: ``dht find-peer`` / ``dht providers`` through the CLI.

The daemon is ``p2pcompute join`` in its own process; kubo (v0.22, embedded,
loopback only) runs in the test process and connects to it. kubo speaks only
``/ipfs/lan/kad/1.0.0`` of our DHT protocols (and none of our others).
"""

import json
import signal
import subprocess
import sys
import time

CLI = [sys.executable, "-m", "p2pcompute"]


def run(*args, timeout=120):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=timeout)


def start_daemon(data_dir, *extra):
    log = data_dir.parent / f"{data_dir.name}.log"
    proc = subprocess.Popen(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0",
                                   "--cpus", "1", "--memory", "1GiB", *extra],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (data_dir / "api").exists():
            res = run("status", "--json", "--data-dir", str(data_dir))
            if res.returncode == 0:
                return proc, json.loads(res.stdout), log
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"daemon did not start: {log.read_text()}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def until(fn, timeout=90.0, every=0.3):
    """Call ``fn`` until it returns something true; that value (the last one on timeout, for the message)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def test_daemon_finds_kubo_and_kubos_content_through_the_lan_dht(kubo, tmp_path):
    data = tmp_path / "a"
    cid = kubo.add(b"a file a user keeps in their own kubo\n" * 64)
    # kubo as the bootstrap peer: the daemon dials it, and its membership and peering try it again and again
    proc, status, log = start_daemon(data, "--bootstrap", kubo.multiaddr)
    try:

        def dht(*args):
            res = run("dht", *args, "--json", "--data-dir", str(data))
            return json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else None

        def kubo_in_table():
            s = json.loads(run("status", "--json", "--data-dir", str(data)).stdout)["dht"]
            return s["routing_table"] >= 1 and s

        assert until(kubo_in_table), "kubo never entered the daemon's routing table"
        found = until(lambda: (a := dht("find-peer", kubo.peer_id)) and a["found"] and a["hops"] is not None and a)
        assert found and found["peer_id"] == kubo.peer_id, found
        assert any(a.startswith("/ip4/127.0.0.1/tcp/") for a in found["addresses"]), found

        providers = until(lambda: (p := dht("providers", cid)) and p["providers"])
        assert providers and kubo.peer_id in [p["peer_id"] for p in providers], providers
        # kubo asked too: the daemon answers on the LAN protocol
        s = json.loads(run("status", "--json", "--data-dir", str(data)).stdout)["dht"]
        assert "/ipfs/lan/kad/1.0.0" in s["protocols"]
        time.sleep(3)  # a few of the peering / membership rounds that used to retry kubo every second
    finally:
        assert stop(proc) == 0
    text = log.read_text()
    # a peer that lacks our protocols is normal: no libp2p error block, no ERROR line
    assert "protocols not supported" not in text and "Failed to open stream" not in text, text
    assert " ERROR " not in text, text
