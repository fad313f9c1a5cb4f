"""Hostile bitswap peers against a real libp2p daemon node: floods of wants from a peer that never reads."""

import os
import random

import trio

from p2pcompute.errors import P2PComputeError, TransportError
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


def deaf_node():
    """A real libp2p peer that accepts bitswap streams and never reads them."""
    transport = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=2.0)

    async def never_read(peer, stream):
        await trio.sleep_forever()

    for protocol in INBOUND_PROTOCOLS:
        transport.on_stream(protocol, never_read)
    return Node(transport, resources=Resources(1.0, 1 << 30, {}), rng=random.Random(9), services=[],
                target_peers=0)


def absent_wants(n):
    return frame(pb.encode(pb.Message(wants=tuple(
        pb.WantEntry(Cid.of(os.urandom(16)), 1, want_type=pb.WANT_HAVE, send_dont_have=True) for _ in range(n)))))


async def test_a_peer_flooding_wants_and_never_reading_is_dropped_and_others_are_served(tmp_path):
    async with trio.open_nursery() as nursery:
        (victim, served, victim_store), (honest, fetcher, honest_store) = make_peer(tmp_path, 0), make_peer(tmp_path, 1)
        hostile = deaf_node()
        for node in (victim, honest, hostile):
            await start(nursery, node)
        root = import_bytes(DATA, victim_store.put).cid
        engine = served.engine
        peak = {"queued": 0, "ledger": 0, "sent": 0}

        async def watch():
            while True:
                peak["queued"] = max(peak["queued"], engine._queued)
                for ledger in engine.ledgers.values():
                    peak["ledger"] = max(peak["ledger"], len(ledger.presences) + len(ledger.blocks))
                await trio.sleep(0.01)

        async def flood():
            victim_id = await hostile.transport.connect(address(victim))
            message = absent_wants(4096)
            while engine.counts["peers_dropped"] == 0 and peak["sent"] < 2_000_000:
                try:
                    stream = await hostile.transport.open_stream(victim_id, PROTOCOL)
                    while engine.counts["peers_dropped"] == 0:
                        await stream.write(message)
                        peak["sent"] += 4096
                except TransportError:
                    await trio.sleep(0.05)

        nursery.start_soon(watch)
        with trio.fail_after(120):
            async with trio.open_nursery() as attack:
                attack.start_soon(flood)
                while peak["sent"] < 8192:  # the flood is on
                    await trio.sleep(0.05)
                await fetcher.fetch(root, [address(victim)])  # an honest peer is still served
                assert read_file(honest_store.get, root) == DATA
                while engine.counts["peers_dropped"] == 0:
                    await trio.sleep(0.05)
        assert engine.counts["peers_dropped"] == 1
        assert hostile.peer_id not in engine.ledgers
        assert peak["ledger"] <= engine.config.max_queue + 1
        assert peak["queued"] <= engine.config.max_queue + 1
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
        nursery.cancel_scope.cancel()
