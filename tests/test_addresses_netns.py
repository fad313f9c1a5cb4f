"""Addresses across two network namespaces: a daemon in its own netns, a node on the host side.

The daemon listens on 0.0.0.0 in a namespace whose only addresses are
loopback and one end of a veth pair; the host side reaches it at that
address. Neither side may tell or keep a loopback address for the other
(issue 9, defect 3). Needs root (ip netns); skipped otherwise.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time

import pytest
import trio

from p2pcompute.node.addrs import ip_of
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="network namespaces need root and iproute2")

CLI = [sys.executable, "-m", "p2pcompute"]


def sh(*args):
    return subprocess.run(list(args), capture_output=True, text=True, check=True)


@pytest.fixture
def netns():
    tag = os.getpid() % 10000
    subnet = 200 + os.getpid() % 50
    ns, host_if, ns_if = f"p2paddr{tag}", f"pah{tag}", f"pan{tag}"
    host_ip, ns_ip = f"10.{subnet}.{tag % 250}.1", f"10.{subnet}.{tag % 250}.2"
    try:
        sh("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.strip()}")
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_ns(ns, *args):
    return subprocess.run(["ip", "netns", "exec", ns, *CLI, *args], capture_output=True, text=True, timeout=60)


async def test_a_daemon_in_another_namespace_and_a_host_node_keep_no_loopback_address_of_each_other(netns, tmp_path):
    ns, host_ip, ns_ip = netns
    data = tmp_path / "ns-daemon"
    log = open(tmp_path / "ns-daemon.log", "w")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *CLI, "join", "--data-dir", str(data),
                             "--listen", "/ip4/0.0.0.0/tcp/0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "ns-daemon.log").read_text()
            res = in_ns(ns, "status", "--json", "--data-dir", str(data)) if (data / "api").exists() else None
            if res is not None and res.returncode == 0:
                break
            await trio.sleep(0.2)
        status = json.loads(res.stdout)
        announced = [a.split("/p2p/")[0] for a in status["addresses"]]
        assert {str(ip_of(a)) for a in announced} == {ns_ip, "127.0.0.1"}, announced
        port = announced[0].split("/tcp/")[1]
        peer_id = status["peer_id"]

        t = Libp2pTransport(Identity.generate(), ["/ip4/0.0.0.0/tcp/0"])
        from p2pcompute.node.identity import PeerId

        daemon = PeerId.from_string(peer_id)
        node = Node(t, resources=Resources(1.0, 1 << 30, {}), rng=random.Random(1),
                    bootstrap=[(daemon, [f"/ip4/{ns_ip}/tcp/{port}"])])
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            with trio.fail_after(30):
                while daemon not in node.records:
                    await trio.sleep(0.05)
            told = [a.split("/p2p/")[0] for a in node.records[daemon][0].addrs]
            assert told == [f"/ip4/{ns_ip}/tcp/{port}"], told  # no loopback
            with trio.fail_after(30):
                while True:
                    rows = json.loads(in_ns(ns, "peers", "--json", "--data-dir", str(data)).stdout)
                    row = next((r for r in rows if r["peer_id"] == str(node.peer_id)), None)
                    if row is not None and row.get("addresses"):
                        break
                    await trio.sleep(0.2)
            kept = row["addresses"]
            assert not any(ip_of(a) is not None and ip_of(a).is_loopback for a in kept), kept
            assert any(host_ip in a for a in kept), kept
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
