"""Membership and data transfer over a bad network: 5% loss and 50 ms one-way delay on every daemon's link.

The harness's loss and delay stand in for ``tc netem`` (see ``netns_harness.py``).
How fast TCP moves data under random loss depends on its congestion control:
with BBR (this project's machines) 50 MiB takes about 10 s; Reno or CUBIC back
off at every loss and move about 0.06 MiB/s here (50 MiB: ~15 minutes), so on
such a kernel the test moves 4 MiB and says so.
"""

import hashlib
import json
import os

ALIVE = ("alive",)


def converge(net, who, timeout):
    return net.wait_until(f"daemons {who} all see each other alive", lambda: net.all_see(who, who, ALIVE), timeout)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def transfer(net, tmp_path, size, src, dst, timeout):
    """``p2pcompute add`` on daemon src, ``p2pcompute get`` on daemon dst (fetched over the network); same bytes."""
    data = tmp_path / "data.bin"
    with open(data, "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    added = net.cli(src, "add", str(data), "--json")
    assert added.returncode == 0, added.stderr.decode()
    cid = json.loads(added.stdout)["cid"]
    out = tmp_path / "got.bin"
    got = net.cli(dst, "get", cid, "-o", str(out), "--json", timeout=timeout)
    assert got.returncode == 0, got.stderr.decode() + "\n" + net.report()
    assert json.loads(got.stdout)["bytes"] == size
    assert sha256(out) == sha256(data)


def test_loss_and_latency_keep_membership_and_a_50_mib_transfer_working(make_net, tmp_path):
    net = make_net(5)
    size = 50 << 20
    if (cc := net.tcp_congestion_control()) != "bbr":
        size = 4 << 20
        print(f"TCP congestion control {cc!r} crawls under 5% loss: moving 4 MiB instead of 50 MiB")
    net.start(range(4))
    converge(net, [0, 1, 2, 3], 90)
    net.impair(loss=0.05, delay_ms=50)
    rtt = net.api(0, "POST", "/v1/ping", {"peer": net.daemons[1].peer_id}, timeout=30)["rtt_ms"]
    assert rtt >= 100, f"the harness's delay is not in effect: ping {rtt} ms"  # 50 ms each way, by construction
    net.start([4])  # joins through the bad network
    converge(net, list(range(5)), 120)
    transfer(net, tmp_path, size, src=1, dst=4, timeout=900)
    converge(net, list(range(5)), 120)  # membership held through the transfer
