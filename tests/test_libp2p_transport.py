"""Real libp2p peers on 127.0.0.1: TCP + Noise + yamux, our protocol, signed messages."""

import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from p2pcompute.errors import PeerDisconnected, PeerUnreachable, RemoteError, RequestFailed, RequestTimeout
from p2pcompute.node import wire
from p2pcompute.node.framing import encode_varint
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import MSG_PROTOCOL, Libp2pTransport
from p2pcompute.node.messages import Hello, HelloReply, PeerRecord, Ping, Pong, Resources

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def make_record(ident):
    rec = PeerRecord(ident.peer_id, 1, ("/ip4/127.0.0.1/tcp/1",), Resources(1.0, 1 << 30, {}))
    return wire.sign_claim(ident, rec)


def serve_basics(t: Libp2pTransport, seen: list | None = None) -> None:
    async def pong(peer, msg):
        return Pong(msg.nonce, msg.payload)

    async def hello(peer, msg):
        signer, rec = wire.open_claim(msg.record, PeerRecord)
        assert signer == peer  # the record is the sender's own
        if seen is not None:
            seen.append((peer, rec))
        return HelloReply(make_record(t.identity))

    t.on_request(Ping, pong)
    t.on_request(Hello, hello)


@asynccontextmanager
async def running(n: int, **kw):
    peers = [Libp2pTransport(Identity.generate(), LOOPBACK, **kw) for _ in range(n)]
    async with trio.open_nursery() as nursery:
        for t in peers:
            serve_basics(t)
            await nursery.start(t.run)
        yield peers
        nursery.cancel_scope.cancel()


async def test_two_peers_exchange_signed_requests_and_replies():
    async with running(2) as (a, b):
        seen = []
        serve_basics(b, seen)
        peer_b = await a.connect(b.listen_addresses()[0])
        assert peer_b == b.local_id
        reply = await a.request(peer_b, Hello(make_record(a.identity)), timeout=5)
        assert isinstance(reply, HelloReply)
        signer, rec = wire.open_claim(reply.record, PeerRecord)
        assert signer == b.local_id == rec.peer_id
        assert seen[0][0] == a.local_id
        assert (await a.request(peer_b, Ping(7, b"hi"), timeout=5)) == Pong(7, b"hi")
        with trio.fail_after(5):
            while a.local_id not in b.connected_peers():
                await trio.sleep(0.01)
        # b answers over the same connection, no dial back needed
        assert (await b.request(a.local_id, Ping(8), timeout=5)) == Pong(8)


async def test_five_peers_all_pairs():
    async with running(5) as peers:
        for t in peers:
            for other in peers:
                if other is not t:
                    t.add_addresses(other.local_id, [a.split("/p2p/")[0] for a in other.listen_addresses()])

        async def exchange(src, dst, nonce):
            assert await src.request(dst.local_id, Ping(nonce), timeout=10) == Pong(nonce)

        async with trio.open_nursery() as nursery:
            for i, src in enumerate(peers):
                for j, dst in enumerate(peers):
                    if i != j:
                        nursery.start_soon(exchange, src, dst, i * 10 + j)
        for t in peers:
            assert len(t.connected_peers()) == 4
            assert t.stats.request_failures == {}


async def test_unknown_request_gets_an_error_reply_not_silence():
    async with running(2) as (a, b):
        b._request_handlers.pop(Hello)
        peer_b = await a.connect(b.listen_addresses()[0])
        with pytest.raises(RemoteError, match="unknown_request"):
            await a.request(peer_b, Hello(make_record(a.identity)), timeout=5)


async def test_handler_crash_becomes_internal_error_reply_and_node_lives():
    async with running(2) as (a, b):
        async def broken(peer, msg):
            raise ZeroDivisionError("boom")

        b.on_request(Ping, broken)
        peer_b = await a.connect(b.listen_addresses()[0])
        with pytest.raises(RemoteError, match="internal"):
            await a.request(peer_b, Ping(1), timeout=5)
        serve_basics(b)
        assert await a.request(peer_b, Ping(2), timeout=5) == Pong(2)


async def test_malformed_and_oversized_frames_are_dropped_and_the_peer_keeps_serving():
    async with running(2, max_message=4096) as (a, b):
        peer_b = await a.connect(b.listen_addresses()[0])
        raw = await a.open_stream(peer_b, MSG_PROTOCOL)
        await raw.write(encode_varint(11) + b"not cbor!!!")
        forged = bytearray(wire.encode(Hello(make_record(a.identity)), identity=a.identity))
        forged[-1] ^= 0xFF  # break the signature
        await raw.write(encode_varint(len(forged)) + bytes(forged))
        await raw.write(encode_varint(10_000_000))  # announces a frame far over the limit
        with trio.fail_after(5):
            while b.stats.rejected["oversized"] < 1:
                await trio.sleep(0.01)
        assert b.stats.rejected["malformed"] >= 1 and b.stats.rejected["bad_signature"] >= 1
        assert await a.request(peer_b, Ping(3), timeout=5) == Pong(3)
        with pytest.raises(Exception, match="limit"):
            await a.request(peer_b, Ping(4, b"x" * 5000), timeout=5)  # refused before sending


async def test_unreachable_peer_is_an_error_quickly():
    async with running(1, dial_timeout=2.0) as (a,):
        ghost = Identity.generate().peer_id
        with pytest.raises(PeerUnreachable):
            await a.request(ghost, Ping(1), timeout=5)
        with trio.fail_after(4):
            with pytest.raises(PeerUnreachable):
                await a.connect(f"/ip4/127.0.0.1/tcp/1/p2p/{ghost}")


def spawn_peer(delay: float) -> tuple[subprocess.Popen, str]:
    script = Path(__file__).with_name("peer_process.py")
    proc = subprocess.Popen([sys.executable, str(script), str(delay)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert "/p2p/" in line, line
    return proc, line


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_peer_killed_or_frozen_mid_request_gives_an_error_not_a_hang(how):
    proc, addr = spawn_peer(delay=30.0)
    try:
        async with running(1) as (a,):
            peer = await a.connect(addr)
            outcome = {}

            async def ask():
                start = trio.current_time()
                try:
                    await a.request(peer, Ping(1), timeout=4.0)
                except RequestFailed as exc:
                    outcome["error"] = exc
                outcome["elapsed"] = trio.current_time() - start

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await trio.sleep(0.5)  # the request is pending at the peer
                os.kill(proc.pid, getattr(signal, how))
            expected = PeerDisconnected if how == "SIGKILL" else RequestTimeout
            assert isinstance(outcome["error"], expected), outcome
            assert outcome["elapsed"] < 5.0
            if how == "SIGSTOP":
                assert isinstance(outcome["error"], RequestTimeout)
    finally:
        proc.kill()
        proc.wait()
