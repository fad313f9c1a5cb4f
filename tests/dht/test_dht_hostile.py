"""Hostile kad peers over real libp2p connections: the victim's memory and CPU stay bounded, honest peers served."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import trio

from p2pcompute.dht import pb
from p2pcompute.dht.driver import DEFAULT_PROTOCOL, Limits, content_key
from p2pcompute.node.framing import FrameReader
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport

from test_dht_driver import CONFIG, boot_of, make_node, wait_for


async def attacker(nursery, seed=0x66):
    t = Libp2pTransport(Identity.from_seed(bytes([seed]) * 32), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=5.0)
    await nursery.start(t.run)
    return t


async def open_kad(t, victim):
    peer, addrs = boot_of(victim)
    t.add_addresses(peer, addrs)
    return await t.open_stream(peer, DEFAULT_PROTOCOL)


async def test_add_provider_with_huge_addresses_keeps_the_victims_memory_bounded():
    budget = 1 << 20
    async with trio.open_nursery() as nursery:
        # no request rate limit here: what a slower flood stores over 48 h arrives at once
        unlimited = Limits(request_rate=1e6, request_burst=1e6)
        victim, dv = make_node(0, (), replace(CONFIG, provider_max_bytes=budget, limits=unlimited))
        await nursery.start(victim.run)
        honest, dh = make_node(1, [boot_of(victim)])
        await nursery.start(honest.run)
        await wait_for(lambda: honest.peer_id in dv.table)
        assert (await dh.provide(content_key("honest data")))["announced_to"] == 1
        await wait_for(lambda: dv.providers.get(content_key("honest data"), trio.current_time()))

        evil = await attacker(nursery)
        me = pb.kad_peer(evil.local_id, ())
        stream = await open_kad(evil, victim)
        huge = [b"\x04" + bytes([i]) * (500 * 1024) for i in range(8)]  # eight 500 KiB "addresses": ~4 MB
        for i in range(12):
            msg = pb.request(pb.MessageType.ADD_PROVIDER, b"big-%d" % i,
                             provider_peers=(pb.KadPeer(me.id, tuple(huge)),))
            await stream.write(pb.frame(msg))
        # then many keys with eight addresses of the largest size kept (256 bytes)
        fat = tuple(bytes([j]) * 256 for j in range(1, 9))
        for i in range(3000):
            if i % 200 == 199:  # a fresh stream now and then (one stream serves at most 256 requests)
                await stream.close()
                stream = await open_kad(evil, victim)
            msg = pb.request(pb.MessageType.ADD_PROVIDER, b"many-%d" % i, provider_peers=(pb.KadPeer(me.id, fat),))
            await stream.write(pb.frame(msg))
        # an honest request after them on the same stream: answered once all before it were handled
        await stream.write(pb.frame(pb.request(pb.MessageType.PING)))
        with trio.fail_after(60):
            assert pb.decode(await FrameReader(stream, pb.MAX_MESSAGE).read_frame()).type is pb.MessageType.PING
        await stream.close()

        store = dv.providers
        now = trio.current_time()
        assert store.bytes <= budget and store.provider_bytes(evil.local_id) <= store.max_bytes_per_provider
        held = [a for key in store.keys() for r in store.get(key, now, 100) for a in r.addrs]
        assert held and max(map(len, held)) <= 256
        assert sum(map(len, held)) <= budget
        assert store.get(b"many-2999", now)  # the flooder's newest records stay, its oldest made room
        # the honest peer's record survived the flood, and the victim still answers it
        assert [p["peer_id"] for p in await dh.find_providers(content_key("honest data"))] == [str(honest.peer_id)]
        assert store.get(content_key("honest data"), trio.current_time())
        nursery.cancel_scope.cancel()


async def test_a_find_node_flood_is_served_at_the_peer_rate_and_honest_peers_still_are():
    limits = Limits(request_rate=20.0, request_burst=20.0, max_wait=0.5)
    async with trio.open_nursery() as nursery:
        victim, dv = make_node(0, (), replace(CONFIG, limits=limits))
        await nursery.start(victim.run)
        honest, dh = make_node(1, [boot_of(victim)])
        await nursery.start(honest.run)
        other, do = make_node(2, [boot_of(victim)])
        await nursery.start(other.run)
        await wait_for(lambda: honest.peer_id in dv.table and other.peer_id in dv.table)
        evil = await attacker(nursery)
        counted = Counter()
        hook = dv.responder._on_request

        def count(peer, msg, protocol):
            counted[peer] += 1
            hook(peer, msg, protocol)

        dv.responder._on_request = count
        request = pb.frame(pb.request(pb.MessageType.FIND_NODE, evil.local_id.raw))
        opened = 0

        async def blast():
            nonlocal opened
            try:
                stream = await open_kad(evil, victim)
            except Exception:
                return
            opened += 1

            async def drain():
                reader = FrameReader(stream, pb.MAX_MESSAGE)
                while await reader.read_frame() is not None:
                    pass

            try:
                async with trio.open_nursery() as inner:
                    inner.start_soon(drain)
                    while True:
                        await stream.write(request * 50)
            except Exception:
                pass  # reset by the victim: it drops a flood

        start = trio.current_time()
        with trio.move_on_after(4.0):
            async with trio.open_nursery() as flood:
                for _ in range(20):
                    flood.start_soon(blast)
                await trio.sleep(1.0)
                # an honest peer's lookup through the victim during the flood
                assert (await dh.find_peer(other.peer_id))["found"]
                await trio.sleep_forever()
        elapsed = trio.current_time() - start
        served = counted[evil.local_id]
        assert opened >= 1 and served > 0  # the flood was served, at the peer rate and no faster
        assert served <= limits.request_burst + limits.request_rate * (elapsed + limits.max_wait) + 1
        rejected = dv.responder.rejected
        assert rejected["rate_limited"] + rejected["busy"] > 0
        assert (await dh.find_peer(other.peer_id))["found"]
        nursery.cancel_scope.cancel()
