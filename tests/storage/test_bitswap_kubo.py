"""Bitswap interop with a real kubo (v0.22, embedded, loopback only), in both directions."""

import random

import trio

from p2pcompute.storage.exporter import read_file
from p2pcompute.storage.importer import import_bytes

from test_bitswap_net import address, make_peer, start


async def test_we_fetch_a_file_kubo_added(kubo, tmp_path):
    data = random.Random(11).randbytes(2 * 1024 * 1024 + 999)  # 9 leaves under one dag-pb root
    kubo_cid = await trio.to_thread.run_sync(kubo.add, data)
    async with trio.open_nursery() as nursery:
        node, fetcher, store = make_peer(tmp_path, 0)
        await start(nursery, node)
        with trio.fail_after(30):
            last = await fetcher.fetch(kubo_cid, [kubo.multiaddr])
        assert str(last.root) == kubo_cid and last.done
        assert read_file(store.get, last.root) == data
        assert fetcher.stats["blocks_received"] >= 9
        nursery.cancel_scope.cancel()


async def test_kubo_fetches_a_file_we_added(kubo, tmp_path):
    data = random.Random(12).randbytes(1024 * 1024 + 4321)
    async with trio.open_nursery() as nursery:
        node, server, store = make_peer(tmp_path, 1)
        await start(nursery, node)
        root = import_bytes(data, store.put).cid  # CIDv0, as kubo's defaults
        assert await trio.to_thread.run_sync(kubo.connect, address(node))
        with trio.fail_after(60):
            got = await trio.to_thread.run_sync(kubo.cat, str(root))
        assert got == data
        assert server.stats["blocks_sent"] >= 5  # root + 4 leaves, over bitswap
        assert any(str(p) == kubo.peer_id for p in server.engine.ledgers)
        nursery.cancel_scope.cancel()
