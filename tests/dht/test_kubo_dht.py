"""Kademlia interop with a real kubo (v0.22, embedded, loopback only) on its LAN DHT, both directions.

kubo's repo has an RSA key (a ``Qm...`` peer ID): our transport names it by
its ``PeerId`` like any other peer.
"""

import random

import trio

from p2pcompute.dht import pb
from p2pcompute.dht.driver import LAN_PROTOCOL, content_key
from p2pcompute.dht.service import DhtConfig, DhtService
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.node.identity import PeerId

LAN = DhtConfig(protocols=(LAN_PROTOCOL,), k=20, alpha=3, query_timeout=5.0, lookup_timeout=20.0)


def make_node(i, bootstrap=()):
    t = Libp2pTransport(Identity.from_seed(bytes([0x40 + i]) * 32), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=5.0)
    dht = DhtService(LAN, rng=random.Random(i))
    node = Node(t, resources=Resources(1.0, 1 << 30, {}), bootstrap=list(bootstrap), target_peers=1,
                rng=random.Random(i), services=[dht])
    return node, dht


def addr_of(node):
    return node.transport.listen_addresses()[0].split("/p2p/")[0]


def kubo_find_peer(kubo, peer_id: str, timeout: int = 10) -> list[str]:
    """kubo's own ``routing.FindPeer`` (``ipfs routing findpeer``) through the library's C API."""
    import json

    ptr = kubo._lib.FindPeer(kubo._s(kubo.repo), kubo._s(peer_id), timeout)
    return json.loads(kubo._string(ptr) or "[]")


async def wait_for(cond, timeout=15.0):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.05)


async def test_kubo_and_our_peers_answer_each_other_on_the_lan_dht(kubo):
    kubo_peer = PeerId.from_string(kubo.peer_id)
    async with trio.open_nursery() as nursery:
        a, da = make_node(0)
        await nursery.start(a.run)
        b, db = make_node(1, [(a.peer_id, [addr_of(a)])])
        await nursery.start(b.run)
        await wait_for(lambda: b.peer_id in da.table and a.peer_id in db.table)

        # kubo -> us: kubo connects to a (loopback, so its LAN DHT admits a) and looks b up;
        # only a's FIND_NODE answers can tell it where b listens.
        assert await trio.to_thread.run_sync(kubo.connect, f"{addr_of(a)}/p2p/{a.peer_id}")
        # (kubo adds a to its routing table once identify has run: retry until then)
        found = None
        with trio.fail_after(20):
            while not found:
                found = await trio.to_thread.run_sync(kubo_find_peer, kubo, str(b.peer_id), 5)
                await trio.sleep(0.2)
        assert addr_of(b) in found
        assert (kubo.peer_id, "FIND_NODE") in da.responder.recent
        assert kubo_peer in da.table  # it sent a request: it speaks the protocol

        # us -> kubo: FIND_NODE
        assert await da.add_peer(kubo_peer, [kubo.multiaddr])
        answer = await da.client.request(kubo_peer, pb.request(pb.MessageType.FIND_NODE, b.peer_id.raw),
                                         trio.current_time() + 5)
        assert answer.type is pb.MessageType.FIND_NODE
        named = {pb.peer_addrs(p)[0] if p.addrs else None for p in answer.closer_peers
                 if p.id == b.peer_id.raw}
        assert named <= {addr_of(b)}  # if kubo names b, with the address it learned from us

        # us -> kubo: ADD_PROVIDER (through provide), then kubo's GET_PROVIDERS names us
        key = content_key("QmWATWQ7fVPP2EFGu71UkfnqhYXDYH566qy47CnJDgvs8u")
        result = await da.provide(key)
        assert result["announced_to"] >= 2  # b and kubo
        reply = await da.client.request(kubo_peer, pb.request(pb.MessageType.GET_PROVIDERS, key),
                                        trio.current_time() + 5)
        providers = {p.id: pb.peer_addrs(p) for p in reply.provider_peers}
        assert providers.get(a.peer_id.raw) == [addr_of(a)]

        # a provider lookup that goes through kubo: b asks kubo too, and kubo's answer counts
        assert await db.add_peer(kubo_peer, [kubo.multiaddr])
        assert [p["peer_id"] for p in await db.find_providers(key)] == [str(a.peer_id)]
        nursery.cancel_scope.cancel()
