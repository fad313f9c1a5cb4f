"""Announced addresses with real libp2p nodes and a real daemon (issue 9, defect 3).

A node listening on 0.0.0.0 announces every interface address; a peer that
reached it at a non-loopback address never gets or keeps loopback addresses.
The non-loopback case needs an interface other than loopback on this machine
(CI has one; the netns harness covers separate hosts).
"""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import trio

from p2pcompute.node.addrs import interface_ips, ip_of
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node

ROUTABLE = [ip for ip in interface_ips()
            if ":" not in ip and not ip.startswith(("127.", "169.254."))]
needs_lan = pytest.mark.skipif(not ROUTABLE, reason="this machine has no IPv4 address besides loopback")


CLI = [sys.executable, "-m", "p2pcompute"]


def run(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60)


def make_node(i, listen, bootstrap=(), **kw):
    t = Libp2pTransport(Identity.generate(), [listen], dial_timeout=5.0, **kw)
    return Node(t, resources=Resources(1.0, 1 << 30, {}), bootstrap=list(bootstrap), rng=random.Random(i))


async def wait_for(cond, timeout=20.0):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


def port_of(node):
    return node.transport.listen_addresses()[0].split("/tcp/")[1].split("/")[0]


def ips(addrs):
    return {str(ip_of(a)) for a in addrs}


@needs_lan
async def test_a_node_on_0000_announces_its_interface_addresses_and_loopback_only_to_loopback_peers():
    async with trio.open_nursery() as nursery:
        a = make_node(0, "/ip4/0.0.0.0/tcp/0")
        await nursery.start(a.run)
        port = port_of(a)
        announced = a.transport.announce_addresses()
        assert ips(announced) >= {"127.0.0.1", *ROUTABLE} and "0.0.0.0" not in ips(announced)
        assert ip_of(announced[0]).is_loopback is False  # routable first
        # b reaches a on loopback: it may keep a's loopback address
        b = make_node(1, "/ip4/127.0.0.1/tcp/0", [(a.peer_id, [f"/ip4/127.0.0.1/tcp/{port}"])])
        await nursery.start(b.run)
        await wait_for(lambda: a.peer_id in b.records)
        assert "127.0.0.1" in ips(b.records[a.peer_id][0].addrs)
        # c reaches a at a LAN address: it is told, and keeps, no loopback address of a
        c = make_node(2, "/ip4/0.0.0.0/tcp/0", [(a.peer_id, [f"/ip4/{ROUTABLE[0]}/tcp/{port}"])])
        await nursery.start(c.run)
        await wait_for(lambda: a.peer_id in c.records and c.peer_id in a.records)
        assert c.transport.remote_ip(a.peer_id) == ROUTABLE[0]
        told = c.records[a.peer_id][0].addrs
        assert ROUTABLE[0] in ips(told) and not any(ip_of(x).is_loopback for x in told)
        assert not any(ip_of(x).is_loopback for x in c.transport.addresses_of(a.peer_id))
        # and a keeps no loopback address for c, which it met at a LAN address
        kept = {r["peer_id"]: r for r in a.peers()}[str(c.peer_id)]["addresses"]
        assert kept and not any(ip_of(x).is_loopback for x in kept)
        assert not any(ip_of(x).is_loopback for x in a.transport.addresses_of(c.peer_id))
        # b (loopback) learned c through peer exchange: c's record from a holds no loopback either
        nursery.cancel_scope.cancel()


@needs_lan
async def test_a_peer_gossiping_loopback_addresses_to_a_lan_peer_has_them_dropped():
    """A record forwarded by a peer met off-host loses its loopback addresses on receipt."""
    async with trio.open_nursery() as nursery:
        a = make_node(0, "/ip4/0.0.0.0/tcp/0")
        await nursery.start(a.run)
        loop_only = make_node(1, "/ip4/127.0.0.1/tcp/0", [(a.peer_id, [f"/ip4/127.0.0.1/tcp/{port_of(a)}"])])
        await nursery.start(loop_only.run)
        await wait_for(lambda: loop_only.peer_id in a.records)
        c = make_node(2, "/ip4/0.0.0.0/tcp/0", [(a.peer_id, [f"/ip4/{ROUTABLE[0]}/tcp/{port_of(a)}"])])
        await nursery.start(c.run)
        await wait_for(lambda: loop_only.peer_id in c.records)
        assert "127.0.0.1" in ips(c.records[loop_only.peer_id][0].addrs)  # the signed record, as made
        row = {r["peer_id"]: r for r in c.peers()}[str(loop_only.peer_id)]
        assert row["addresses"] == []  # nothing c could dial
        assert c.transport.addresses_of(loop_only.peer_id) == []
        nursery.cancel_scope.cancel()


def test_an_announce_or_no_announce_entry_that_is_not_a_multiaddr_is_a_clear_error():
    from p2pcompute.errors import UserError

    for kw in ({"announce": ["203.0.113.7:4001"]}, {"no_announce": ["10.0.0.0/8"]}):
        with pytest.raises(UserError, match="not a valid multiaddr"):
            Libp2pTransport(Identity.generate(), ["/ip4/0.0.0.0/tcp/0"], **kw)


async def test_announce_replaces_and_no_announce_filters_what_a_node_tells():
    async with trio.open_nursery() as nursery:
        a = make_node(0, "/ip4/0.0.0.0/tcp/0", no_announce=["/ip4/127.0.0.0/ipcidr/8"])
        await nursery.start(a.run)
        assert not any(ip_of(x).is_loopback for x in a.transport.announce_addresses())
        b = make_node(1, "/ip4/127.0.0.1/tcp/0", announce=["/dns4/peer.example.org/tcp/4001"])
        await nursery.start(b.run)
        assert b.transport.announce_addresses() == ["/dns4/peer.example.org/tcp/4001"]
        assert b.status()["addresses"] == [f"/dns4/peer.example.org/tcp/4001/p2p/{b.peer_id}"]
        nursery.cancel_scope.cancel()


@needs_lan
def test_a_daemon_listening_on_0000_prints_its_interface_addresses(tmp_path):
    data_dir = tmp_path / "d"
    log = open(tmp_path / "d.log", "w")
    proc = subprocess.Popen(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/0.0.0.0/tcp/0"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "d.log").read_text()
            res = run("status", "--json", "--data-dir", str(data_dir)) if (data_dir / "api").exists() else None
            if res is not None and res.returncode == 0:
                break
            time.sleep(0.2)
        addresses = json.loads(res.stdout)["addresses"]
        got = ips(a.split("/p2p/")[0] for a in addresses)
        assert set(ROUTABLE) <= got and "127.0.0.1" in got and "0.0.0.0" not in got, addresses
        printed = (tmp_path / "d.log").read_text()
        assert all(ip in printed for ip in ROUTABLE), printed
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
