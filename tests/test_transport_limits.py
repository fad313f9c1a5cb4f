"""The libp2p transport against hostile or careless use (issue 9): ports, slots, the peerstore.

Real libp2p peers on loopback. Each test failed before its fix:
* a second daemon on a port in use bound it too (py-libp2p sets SO_REUSEPORT);
* py-libp2p held every inbound slot until the swarm stopped, so that after
  ``max_connections`` short-lived connections nobody could connect any more;
* silent TCP sockets (no handshake) held slots as well;
* py-libp2p's peerstore evicted our own key after 1000 peers, and the next
  identify crashed the daemon.
"""

import socket

import pytest
import trio

from p2pcompute.errors import TransportError, UserError
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Ping, Pong

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def server(listen=LOOPBACK, **kw):
    t = Libp2pTransport(Identity.generate(), listen, **kw)

    async def pong(peer, msg):
        return Pong(msg.nonce)

    t.on_request(Ping, pong)
    return t


def full_addr(t):
    return t.listen_addresses()[0]


async def connect_once(addr, nonce=1):
    """A fresh identity connects, pings, and goes away."""
    client = Libp2pTransport(Identity.generate(), LOOPBACK, dial_timeout=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            peer = await client.connect(addr)
            return await client.request(peer, Ping(nonce), timeout=10) == Pong(nonce)
        except TransportError:  # refused, reset, unreachable
            return False
        finally:
            nursery.cancel_scope.cancel()


async def start_fails(nursery, t):
    """``nursery.start(t.run)`` fails; the user error inside trio's exception groups."""
    with pytest.raises(BaseException) as info:
        await nursery.start(t.run)
    error = info.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, UserError), repr(info.value)
    return str(error)


def port_of(t):
    return int(full_addr(t).split("/tcp/")[1].split("/")[0])


async def test_a_second_transport_on_a_port_in_use_is_refused_with_a_clear_error():
    async with trio.open_nursery() as nursery:
        first = server()
        await nursery.start(first.run)
        port = port_of(first)
        second = Libp2pTransport(Identity.generate(), [f"/ip4/127.0.0.1/tcp/{port}"])
        assert f"port {port} is already in use by another process" in await start_fails(nursery, second)
        # one listening socket on that port, not two
        probe = socket.socket()
        with pytest.raises(OSError):
            probe.bind(("127.0.0.1", port))
        probe.close()
        assert await connect_once(full_addr(first))
        nursery.cancel_scope.cancel()


async def test_a_wildcard_listener_conflicts_with_a_specific_one_too():
    async with trio.open_nursery() as nursery:
        first = Libp2pTransport(Identity.generate(), ["/ip4/0.0.0.0/tcp/0"])
        await nursery.start(first.run)
        port = port_of(first)
        second = Libp2pTransport(Identity.generate(), [f"/ip4/127.0.0.1/tcp/{port}"])
        assert "already in use" in await start_fails(nursery, second)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("addr", ["/ip4/0.0.0.0/udp/4001/quic-v1", "/ip4/0.0.0.0/udp/4001"])
def test_a_udp_listen_address_says_udp_is_not_supported(addr):
    with pytest.raises(UserError, match="UDP/QUIC is not supported"):
        Libp2pTransport(Identity.generate(), [addr])


async def test_short_lived_connections_give_their_inbound_slots_back():
    async with trio.open_nursery() as nursery:
        t = server(max_connections=8)
        await nursery.start(t.run)
        for i in range(40):  # five times max_connections, each from a new identity
            assert await connect_once(full_addr(t), i), f"connection {i} refused"
            with trio.fail_after(30):  # the client went away: its slot comes back (no race on who is first)
                while t._gate.counts()["inbound"] > 0:
                    await trio.sleep(0.01)
        assert t._gate.counts()["inbound"] <= 8
        nursery.cancel_scope.cancel()


async def test_identities_holding_silent_connections_make_room_for_a_newcomer():
    async with trio.open_nursery() as nursery:
        t = server(max_connections=8)
        t._gate.grace = 0.5  # a connection is kept at least this long before it may be closed for another
        await nursery.start(t.run)
        holders = [Libp2pTransport(Identity.generate(), LOOPBACK) for _ in range(8)]
        for h in holders:  # connect and stay, saying nothing
            await nursery.start(h.run)
            await h.connect(full_addr(t))
        await trio.sleep(0.6)
        assert await connect_once(full_addr(t))
        assert t._gate.evicted >= 1 and t._gate.counts()["inbound"] <= 8
        nursery.cancel_scope.cancel()


async def test_silent_sockets_are_closed_and_do_not_lock_newcomers_out():
    async with trio.open_nursery() as nursery:
        t = server(max_connections=16, handshake_timeout=2.0)
        await nursery.start(t.run)
        port = port_of(t)
        silent = []
        for _ in range(100):  # far more than max_connections, no handshake at all
            s = trio.socket.socket()
            await s.connect(("127.0.0.1", port))
            silent.append(s)
        assert await connect_once(full_addr(t))  # the oldest pending handshakes made room
        # and the silent ones are closed after the handshake timeout
        with trio.fail_after(30):
            while t._gate.counts()["pending"] > 0:
                await trio.sleep(0.1)
        for s in silent:
            s.close()
        nursery.cancel_scope.cancel()


def test_connections_per_ip_are_capped_except_on_loopback():
    from p2pcompute.node.inbound import InboundGate

    gate = InboundGate(max_connections=100, max_per_ip=2)
    gate._per_ip["192.0.2.9"] = 2
    gate._per_ip["127.0.0.1"] = 50
    assert "max_connections_per_ip" in gate.refusal("192.0.2.9")
    assert gate.refusal("192.0.2.10") is None
    assert gate.refusal("127.0.0.1") is None


async def test_a_peerstore_of_2000_strangers_keeps_our_key_and_the_daemon_serves():
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    async with trio.open_nursery() as nursery:
        t = server()
        await nursery.start(t.run)
        store = t._host.get_peerstore()
        for i in range(2000):
            kp = create_new_key_pair()
            pid = ID.from_pubkey(kp.public_key)
            store.add_pubkey(pid, kp.public_key)
            store.add_addrs(pid, [Multiaddr(f"/ip4/10.{i // 250}.{i % 250}.1/tcp/4001")], 3600)
        assert store.pubkey(t._host.get_id()) == t._host.get_public_key()
        assert len(store.peer_ids()) <= max(8192, 2 * 512)
        # identify (which reads our own key) and our protocol still work for newcomers
        for i in range(3):
            assert await connect_once(full_addr(t), i)
        nursery.cancel_scope.cancel()


async def test_the_peerstore_evicts_strangers_without_a_connection_not_ourselves():
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    from p2pcompute.node.peerstore import SafePeerStore

    own = create_new_key_pair()
    own_id = ID.from_pubkey(own.public_key)
    keep = set()
    store = SafePeerStore(own_id, own, max_peers=100, connected=lambda pid: pid in keep)
    store.add_key_pair(own_id, own)
    ids = []
    for i in range(300):
        kp = create_new_key_pair()
        pid = ID.from_pubkey(kp.public_key)
        store.add_pubkey(pid, kp.public_key)
        ids.append(pid)
        if i < 5:
            keep.add(pid)
    assert len(store.peer_ids()) <= 100
    assert keep <= set(store.peer_ids())
    assert store.pubkey(own_id) == own.public_key and store.privkey(own_id) == own.private_key


@pytest.mark.slow
async def test_2000_short_lived_connections_from_fresh_identities_then_an_honest_peer_connects():
    """The issue's attack in full: 2000 connections, more than py-libp2p's 512 slots and 1000 peers."""
    async with trio.open_nursery() as nursery:
        t = server()
        await nursery.start(t.run)
        for i in range(2000):
            assert await connect_once(full_addr(t), i), f"connection {i} refused"
        assert await connect_once(full_addr(t), 9999)
        assert t._host.get_peerstore().pubkey(t._host.get_id()) == t._host.get_public_key()
        nursery.cancel_scope.cancel()


def test_two_daemons_on_one_port_the_second_exits_with_one_clear_line(tmp_path):
    import json
    import subprocess
    import sys
    import time

    cli = [sys.executable, "-m", "p2pcompute"]
    first = subprocess.Popen(cli + ["join", "--data-dir", str(tmp_path / "a"), "--listen", "/ip4/0.0.0.0/tcp/0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert first.poll() is None and time.monotonic() < deadline, "first daemon did not start"
            res = subprocess.run(cli + ["status", "--json", "--data-dir", str(tmp_path / "a")],
                                 capture_output=True, text=True, timeout=60)
            if res.returncode == 0:
                break
            time.sleep(0.2)
        port = json.loads(res.stdout)["addresses"][0].split("/tcp/")[1].split("/")[0]
        for listen in (f"/ip4/127.0.0.1/tcp/{port}", f"/ip4/0.0.0.0/tcp/{port}"):
            second = subprocess.run(cli + ["join", "--data-dir", str(tmp_path / "b"), "--listen", listen],
                                    capture_output=True, text=True, timeout=60)
            assert second.returncode != 0
            assert f"port {port} is already in use by another process" in second.stderr
            assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) <= 2, second.stderr
        udp = subprocess.run(cli + ["join", "--data-dir", str(tmp_path / "c"), "--listen", "/ip4/0.0.0.0/udp/4001/quic-v1"],
                             capture_output=True, text=True, timeout=60)
        assert udp.returncode != 0 and "UDP/QUIC is not supported" in udp.stderr, udp.stderr
    finally:
        first.terminate()
        first.wait(timeout=30)


async def test_connections_from_one_lan_address_are_capped_and_a_warning_says_so(caplog):
    from p2pcompute.node.addrs import interface_ips

    lan = [ip for ip in interface_ips() if ":" not in ip and not ip.startswith(("127.", "169.254."))]
    if not lan:
        pytest.skip("this machine has no IPv4 address besides loopback")
    async with trio.open_nursery() as nursery:
        t = server(["/ip4/0.0.0.0/tcp/0"], max_connections_per_ip=2)
        await nursery.start(t.run)
        addr = f"/ip4/{lan[0]}/tcp/{port_of(t)}/p2p/{t.local_id}"
        holders = [Libp2pTransport(Identity.generate(), LOOPBACK) for _ in range(2)]
        for h in holders:
            await nursery.start(h.run)
            await h.connect(addr)
        assert not await connect_once(addr)  # a third from the same address is refused
        assert t._gate.refused >= 1
        assert any("max_connections_per_ip" in r.getMessage() for r in caplog.records)
        assert await connect_once(full_addr(t).replace("/ip4/0.0.0.0/", "/ip4/127.0.0.1/"))  # loopback is not capped
        nursery.cancel_scope.cancel()


def test_addresses_given_for_peers_are_bounded_newest_kept():
    from p2pcompute.node import libp2p_transport as lt

    t = Libp2pTransport(Identity.generate(), LOOPBACK)
    peers = [Identity.generate().peer_id for _ in range(50)]
    old_max = lt.PEERSTORE_MAX
    lt.PEERSTORE_MAX = 40  # the bound itself is 8192: the rule, not the figure, is under test
    try:
        for i, peer in enumerate(peers[:40]):
            t.add_addresses(peer, [f"/ip4/127.0.0.1/tcp/{1000 + i}"])
        t.add_addresses(peers[0], ["/ip4/127.0.0.1/tcp/999"])  # heard of again: now the most recent
        for i, peer in enumerate(peers[40:], start=40):
            t.add_addresses(peer, [f"/ip4/127.0.0.1/tcp/{1000 + i}"])
    finally:
        lt.PEERSTORE_MAX = old_max
    assert len(t._addrs) == 40
    assert peers[0] in t._addrs and all(p not in t._addrs for p in peers[1:11]) and peers[11] in t._addrs
    assert t.addresses_of(peers[-1]) == ["/ip4/127.0.0.1/tcp/1049"]


class _FakeSocket:
    def __init__(self, ip, port):
        self.addr = (ip, port)

    def getpeername(self):
        return self.addr


class _FakeStream:
    def __init__(self, ip, port):
        self.socket = _FakeSocket(ip, port)


async def test_handshakes_from_one_ip_are_paced_then_refused(autojump_clock):
    """A crowd of throwaway identities from one IP gets handshakes at the set rate, not the whole CPU."""
    from p2pcompute.node.inbound import InboundGate

    gate = InboundGate(max_connections=100, max_per_ip=100, handshake_rate=1.0, handshake_burst=3,
                       handshake_wait=2.0)
    started: list[float] = []

    async def handler(stream):
        started.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for port in range(6):
            nursery.start_soon(gate.serve, _FakeStream("10.1.2.3", 1000 + port), handler)
        nursery.start_soon(gate.serve, _FakeStream("10.9.9.9", 1), handler)  # another IP has its own burst
    times = sorted(round(t, 3) for t in started)
    assert times == [0.0, 0.0, 0.0, 0.0, 1.0, 2.0]  # burst of 3 (+1 from the other IP), then 1/s, up to 2 s
    assert gate.refused == 1  # the sixth from 10.1.2.3 would have waited 3 s
