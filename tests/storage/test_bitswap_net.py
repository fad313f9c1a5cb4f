"""Bitswap between real libp2p nodes in one process: one, three, lying and vanishing providers."""

import json
import random

import trio

from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.storage.bitswap import SessionConfig
from p2pcompute.storage.bitswap_service import BitswapService
from p2pcompute.storage.blockstore import Blockstore
from p2pcompute.storage.exporter import read_file
from p2pcompute.storage.importer import import_bytes

FAST = SessionConfig(stall_timeout=1.0, idle_timeout=20.0, rebroadcast=0.5)


class LyingBitswap(BitswapService):
    """A provider that flips a byte of every block it sends (a malicious or broken peer)."""

    def _local(self, cid):
        data = super()._local(cid)
        return None if data is None else bytes([data[0] ^ 0xFF]) + data[1:]


def make_peer(tmp_path, i, cls=BitswapService):
    transport = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=2.0)
    store = Blockstore(tmp_path / f"blocks{i}")
    service = cls(store, session_config=FAST)
    node = Node(transport, resources=Resources(1.0, 1 << 30, {}), rng=random.Random(i),
                services=[service], target_peers=0)
    return node, service, store


def address(node):
    return f"{node.transport.listen_addresses()[0]}/p2p/{node.peer_id}"


async def start(nursery, node):
    """Run ``node`` in its own cancel scope (cancel it to make the peer vanish)."""
    scope = trio.CancelScope()

    async def run(task_status=trio.TASK_STATUS_IGNORED):
        with scope:
            await node.run(task_status=task_status)

    await nursery.start(run)
    return scope


DATA = random.Random(1).randbytes(3 * 1024 * 1024 + 12345)


async def test_fetch_from_one_provider_and_progress_is_streamed(tmp_path):
    async with trio.open_nursery() as nursery:
        (a, _, store_a), (b, fetcher, store_b) = make_peer(tmp_path, 0), make_peer(tmp_path, 1)
        await start(nursery, a)
        await start(nursery, b)
        root = import_bytes(DATA, store_a.put).cid
        seen = []
        with trio.fail_after(30):
            async for progress in fetcher.fetch_dag(root, [address(a)]):
                seen.append(progress)
        assert seen[-1].done and seen[-1].bytes >= len(DATA)
        assert [p.blocks for p in seen] == sorted(p.blocks for p in seen)
        assert read_file(store_b.get, root) == DATA
        # fetching again touches nobody: everything is local now
        sent = fetcher.stats["messages_sent"]
        assert (await fetcher.fetch(root, [address(a)])).done
        assert fetcher.stats["messages_sent"] == sent
        nursery.cancel_scope.cancel()


async def test_three_providers_share_the_work(tmp_path):
    async with trio.open_nursery() as nursery:
        peers = [make_peer(tmp_path, i) for i in range(4)]
        for node, _, _ in peers:
            await start(nursery, node)
        root = None
        for _, _, store in peers[:3]:
            root = import_bytes(DATA, store.put, cid_version=1).cid
        fetcher, store = peers[3][1], peers[3][2]
        with trio.fail_after(30):
            await fetcher.fetch(root, [address(n) for n, _, _ in peers[:3]])
        assert read_file(store.get, root) == DATA
        served = [svc.stats["blocks_sent"] for _, svc, _ in peers[:3]]
        assert all(s > 0 for s in served), served
        assert sum(served) <= fetcher.stats["blocks_received"] + 3
        nursery.cancel_scope.cancel()


async def test_corrupted_blocks_are_rejected_and_fetched_elsewhere(tmp_path):
    async with trio.open_nursery() as nursery:
        liar, liar_svc, liar_store = make_peer(tmp_path, 0, LyingBitswap)
        honest, _, honest_store = make_peer(tmp_path, 1)
        me, fetcher, my_store = make_peer(tmp_path, 2)
        for node in (liar, honest, me):
            await start(nursery, node)
        root = import_bytes(DATA, liar_store.put).cid
        import_bytes(DATA, honest_store.put)
        with trio.fail_after(30):
            await fetcher.fetch(root, [address(liar), address(honest)])
        assert read_file(my_store.get, root) == DATA
        assert liar_svc.stats["blocks_sent"] >= 1
        assert fetcher.stats["unsolicited_blocks"] >= 1
        # every stored block hashes to its CID (the blockstore re-checks on read)
        assert all(my_store.get(cid) for cid in my_store.walk(root))
        nursery.cancel_scope.cancel()


async def test_a_provider_vanishing_mid_transfer_does_not_fail_the_fetch(tmp_path):
    async with trio.open_nursery() as nursery:
        (a, a_svc, store_a), (b, _, store_b), (me, fetcher, mine) = (make_peer(tmp_path, i) for i in range(3))
        scope_a = await start(nursery, a)
        await start(nursery, b)
        await start(nursery, me)
        root = import_bytes(DATA, store_a.put).cid
        import_bytes(DATA, store_b.put)
        vanished_at = None
        with trio.fail_after(40):
            async for progress in fetcher.fetch_dag(root, [address(a), address(b)]):
                if vanished_at is None and a_svc.stats["blocks_sent"] >= 2:
                    vanished_at = progress.blocks
                    scope_a.cancel()  # the provider's daemon stops mid-transfer
        assert vanished_at is not None and progress.done
        assert read_file(mine.get, root) == DATA
        nursery.cancel_scope.cancel()


async def test_api_route_fetches_and_pins_with_the_storage_services_blockstore(tmp_path):
    from p2pcompute.storage.service import StorageService

    async with trio.open_nursery() as nursery:
        a, _, store_a = make_peer(tmp_path, 0)
        # as the daemon wires it: the bitswap service takes the storage service's blockstore
        store_b = Blockstore(tmp_path / "daemon-blocks")
        fetcher = BitswapService(session_config=FAST)
        b = Node(Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"]),
                 resources=Resources(1.0, 1 << 30, {}), services=[StorageService(store_b), fetcher], target_peers=0)
        assert fetcher.blockstore is store_b
        await start(nursery, a)
        await start(nursery, b)
        root = import_bytes(DATA[:300_000], store_a.put).cid
        route = fetcher.api_routes()[("POST", "/v1/bitswap/fetch")]
        body = json.dumps({"cid": str(root), "peers": [address(a)]}).encode()
        with trio.fail_after(30):
            status, _, payload = await route(body, {})
        reply = json.loads(payload)
        assert status == 200 and reply["cid"] == str(root) and reply["pinned"]
        assert root in store_b.pins
        status = fetcher.status()
        assert status["fetches"] == 1 and status["blocks_received"] == reply["blocks"]
        nursery.cancel_scope.cancel()


async def test_a_cancelled_fetch_withdraws_its_wants_and_its_session(tmp_path):
    async with trio.open_nursery() as nursery:
        (a, provider, _), (b, fetcher, _) = make_peer(tmp_path, 0), make_peer(tmp_path, 1)
        await start(nursery, a)
        await start(nursery, b)
        missing = import_bytes(b"nobody has this").cid
        with trio.move_on_after(60) as scope:
            async with trio.open_nursery() as inner:
                inner.start_soon(fetcher.fetch, missing, [address(a)])
                while not provider.engine.wantlist(b.peer_id):  # the provider holds our want
                    await trio.sleep(0.02)
                assert len(fetcher.status()["sessions"]) == 1
                inner.cancel_scope.cancel()  # the user went away
            with trio.fail_after(30):
                while provider.engine.wantlist(b.peer_id):  # our cancel reached it
                    await trio.sleep(0.02)
        assert not scope.cancelled_caught
        assert fetcher.status()["sessions"] == []
        nursery.cancel_scope.cancel()


async def test_a_stream_that_fails_to_open_once_bans_nobody_and_the_fetch_completes(tmp_path):
    """Under load py-libp2p fails some stream opens; that is not a peer refusing replies (it was banned 60 s)."""
    from p2pcompute.errors import TransportError
    from p2pcompute.storage.bitswap_service import PROTOCOL

    async with trio.open_nursery() as nursery:
        (a, served, store_a), (b, fetcher, store_b) = make_peer(tmp_path, 0), make_peer(tmp_path, 1)
        await start(nursery, a)
        await start(nursery, b)
        root = import_bytes(DATA, store_a.put).cid
        real_open, failed = a.transport.open_stream, []

        async def flaky_open(peer, protocol):
            if protocol == PROTOCOL and not failed:
                failed.append(peer)
                raise TransportError("Failed to create stream (injected, as py-libp2p does under load)")
            return await real_open(peer, protocol)

        a.transport.open_stream = flaky_open
        with trio.fail_after(60):
            assert (await fetcher.fetch(root, [address(a)])).done
        assert failed == [b.peer_id]
        assert not served.engine.banned(b.peer_id, trio.current_time())
        assert served.engine.counts["peers_dropped"] == 0
        assert read_file(store_b.get, root) == DATA
        nursery.cancel_scope.cancel()
