"""Hostile bitswap peers against a real libp2p daemon node: floods of wants from a peer that never reads."""

import os
import random

import trio

from p2pcompute.errors import P2PComputeError
from p2pcompute.node.framing import frame
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.storage import bitswap_pb as pb
from p2pcompute.storage.bitswap_service import INBOUND_PROTOCOLS, PROTOCOL
from p2pcompute.storage.cid import Cid
from p2pcompute.storage.exporter import read_file
from p2pcompute.storage.importer import import_bytes

from test_bitswap_net import DATA, address, make_peer, start


def hostile_node(*, deaf: bool):
    """A real libp2p peer: ``deaf`` accepts bitswap streams and never reads them; else it has no bitswap at all."""
    transport = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=2.0)

    async def never_read(peer, stream):
        await trio.sleep_forever()

    if deaf:
        for protocol in INBOUND_PROTOCOLS:
            transport.on_stream(protocol, never_read)
    return Node(transport, resources=Resources(1.0, 1 << 30, {}), rng=random.Random(9), services=[],
                target_peers=0)


def absent_wants(n):
    return frame(pb.encode(pb.Message(wants=tuple(
        pb.WantEntry(Cid.of(os.urandom(16)), 1, want_type=pb.WANT_HAVE, send_dont_have=True) for _ in range(n)))))


async def flood(hostile, victim, until):
    """Write 4096-entry want-have + send-dont-have messages to ``victim`` until ``until()``; never read."""
    victim_id = await hostile.transport.connect(address(victim))
    message = absent_wants(4096)
    while not until():
        try:
            stream = await hostile.transport.open_stream(victim_id, PROTOCOL)
            while not until():
                await stream.write(message)
        except P2PComputeError:
            await trio.sleep(0.05)


async def test_a_flood_of_wants_from_a_peer_that_never_reads_stays_bounded_and_others_are_served(tmp_path):
    async with trio.open_nursery() as nursery:
        (victim, served, victim_store), (honest, fetcher, honest_store) = make_peer(tmp_path, 0), make_peer(tmp_path, 1)
        hostile = hostile_node(deaf=True)
        for node in (victim, honest, hostile):
            await start(nursery, node)
        root = import_bytes(DATA, victim_store.put).cid
        engine = served.engine
        peak = {"queued": 0, "ledger": 0, "wants": 0}

        async def watch():
            while True:
                peak["queued"] = max(peak["queued"], getattr(engine, "_queued", 0))
                for ledger in engine.ledgers.values():
                    peak["ledger"] = max(peak["ledger"], len(ledger.presences) + len(ledger.blocks))
                ledger = engine.ledgers.get(hostile.peer_id)
                peak["wants"] = max(peak["wants"], ledger.wants_received if ledger else 0)
                await trio.sleep(0.01)

        nursery.start_soon(watch)
        with trio.fail_after(120):
            async with trio.open_nursery() as attack:
                attack.start_soon(flood, hostile, victim, lambda: peak["wants"] >= 12 * 4096)
                while peak["wants"] < 2 * 4096:  # the flood is on
                    await trio.sleep(0.05)
                await fetcher.fetch(root, [address(victim)])  # an honest peer is still served
                assert read_file(honest_store.get, root) == DATA
        # the engine took the wants at its pace, and never held more than its bounds
        bound = getattr(engine.config, "max_queue", 16384) + 1
        assert peak["ledger"] <= bound and peak["queued"] <= bound, peak
        assert all(len(ledger.waiting) <= engine.config.max_wants_per_peer for ledger in engine.ledgers.values())
        assert len(served._streams_in.get(hostile.peer_id, ())) <= 2
        nursery.cancel_scope.cancel()


async def test_a_peer_that_floods_wants_but_takes_no_replies_is_dropped_and_banned(tmp_path):
    async with trio.open_nursery() as nursery:
        victim, served, _ = make_peer(tmp_path, 0)
        hostile = hostile_node(deaf=False)  # it asks, but no reply can ever reach it
        for node in (victim, hostile):
            await start(nursery, node)
        engine = served.engine
        with trio.fail_after(60):
            await flood(hostile, victim, lambda: engine.counts["peers_dropped"] > 0)
        assert hostile.peer_id not in engine.ledgers
        assert engine.banned(hostile.peer_id, trio.current_time())
        # while banned, its new streams are reset at once and its wants cost nothing
        before = engine._queued
        try:
            stream = await hostile.transport.open_stream(victim.peer_id, PROTOCOL)
            await stream.write(absent_wants(100))
        except P2PComputeError:
            pass
        await trio.sleep(0.2)
        assert engine._queued == before and hostile.peer_id not in engine.ledgers
        assert engine.counts["peers_dropped"] == 1
        nursery.cancel_scope.cancel()
