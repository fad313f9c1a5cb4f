"""Request handling, and whole lookups through the codec among 40 pure-logic peers.

The ``Net`` below does what the trio driver will do, minus the I/O: encode a
request, decode it at the receiver, let its ``KadServer`` answer, decode the
answer, feed the lookup.
"""

import random

import pytest

from p2pcompute.dht import pb
from p2pcompute.dht.keys import key_of, peer_key
from p2pcompute.dht.lookup import Lookup, ProviderLookup, ValueLookup
from p2pcompute.dht.providers import ProviderStore
from p2pcompute.dht.records import RecordStore, make_record, newer, validate
from p2pcompute.dht.routing import RoutingTable
from p2pcompute.dht.server import KadServer
from p2pcompute.errors import BadSignature, WireError
from p2pcompute.node.identity import Identity

K = 8


class Net:
    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.idents = [Identity.from_seed(rng.randbytes(32)) for _ in range(n)]
        self.peers = [i.peer_id for i in self.idents]
        self.addr = {p: pb.addr_to_bytes(f"/ip4/10.0.{i // 250}.{i % 250 + 1}/tcp/4001") for i, p in enumerate(self.peers)}
        self.servers = {}
        for p in self.peers:
            table = RoutingTable(p, now=0.0, rng=random.Random(rng.random()), k=K)
            for other in self.peers:
                table.on_seen(other, 0.0)
            self.servers[p] = KadServer(
                table, ProviderStore(), RecordStore(), k=K, addrs_of=lambda q: (self.addr[q],)
            )
        self.messages = 0

    def exchange(self, sender, receiver, msg: pb.KadMessage, now: float = 0.0) -> pb.KadMessage | None:
        self.messages += 1
        request = pb.decode(pb.encode(msg))
        reply = self.servers[receiver].handle(sender, request, now)
        return None if reply is None else pb.decode(pb.encode(reply))

    def lookup(self, origin, lookup, key: bytes, kind=pb.MessageType.FIND_NODE):
        now = 0.0
        while True:
            queries = lookup.next(now)
            if lookup.finished:
                return lookup
            assert queries, "the lookup waits for answers it will never get"
            for q in queries:
                reply = self.exchange(origin, q.peer, pb.request(kind, key), now)
                closer = [pid for p in reply.closer_peers if (pid := pb.peer_id_of(p)) is not None]
                assert all(pb.peer_addrs(p) for p in reply.closer_peers)
                if isinstance(lookup, ProviderLookup):
                    providers = [pb.peer_id_of(p) for p in reply.provider_peers]
                    lookup.on_response(q.peer, closer, now, providers=providers)
                elif isinstance(lookup, ValueLookup):
                    record = validate(key, reply.record.value) if reply.record is not None else None
                    lookup.on_response(q.peer, closer, now, record=record)
                else:
                    lookup.on_response(q.peer, closer, now)
            now += 0.1

    def seeds(self, origin, target):
        return self.servers[origin].table.closest(target, K)


@pytest.fixture(scope="module")
def net():
    return Net(40, seed=3)


def test_find_node_through_the_codec(net):
    origin, wanted = net.peers[0], net.peers[17]
    target = peer_key(wanted)
    lookup = net.lookup(origin, Lookup(target, net.seeds(origin, target), now=0.0, k=K, local=origin), wanted.raw)
    truth = sorted((p for p in net.peers if p != origin), key=lambda p: peer_key(p) ^ target)[:K]
    assert lookup.result() == truth and truth[0] == wanted


def test_provide_then_find_providers(net):
    publisher, seeker = net.peers[3], net.peers[30]
    cid_mh = b"\x12\x20" + bytes(range(32))
    target = key_of(cid_mh)
    closest = net.lookup(publisher, Lookup(target, net.seeds(publisher, target), now=0.0, k=K, local=publisher), cid_mh)
    announce = pb.KadMessage(pb.MessageType.ADD_PROVIDER, cid_mh, provider_peers=(pb.kad_peer(publisher, [net.addr[publisher]]),))
    for peer in closest.result():
        assert net.exchange(publisher, peer, announce) is None
    found = net.lookup(
        seeker,
        ProviderLookup(target, net.seeds(seeker, target), now=0.0, k=K, local=seeker, want=1),
        cid_mh,
        pb.MessageType.GET_PROVIDERS,
    )
    assert list(found.providers) == [publisher]


def test_put_then_get_newest_value(net):
    author = net.idents[5]
    v1 = make_record(author, b"capabilities", b"old", 1)
    v2 = make_record(author, b"capabilities", b"new", 2)
    target = key_of(v1.key)
    holders = net.lookup(author.peer_id, Lookup(target, net.seeds(author.peer_id, target), now=0.0, k=K), v1.key)
    for i, peer in enumerate(holders.result()):
        rec = v2 if i < 3 else v1  # only some peers got the newest version
        put = pb.KadMessage(pb.MessageType.PUT_VALUE, rec.key, pb.KadRecord(rec.key, rec.encode()))
        assert net.exchange(author.peer_id, peer, put) == put
    reader = net.peers[33]
    got = net.lookup(
        reader,
        ValueLookup(target, net.seeds(reader, target), now=0.0, k=K, local=reader, quorum=K, newer=newer),
        v1.key,
        pb.MessageType.GET_VALUE,
    )
    assert got.best == v2
    assert len(got.outdated()) >= K - 3 - 1


def test_server_rules(net):
    a, b, c = net.peers[:3]
    server = net.servers[c]
    # FIND_NODE never names the asker
    reply = server.handle(a, pb.request(pb.MessageType.FIND_NODE, a.raw), 0.0)
    ids = [p.id for p in reply.closer_peers]
    assert a.raw not in ids and len(ids) == K
    # PING is echoed
    assert server.handle(a, pb.request(pb.MessageType.PING), 0.0) == pb.KadMessage(pb.MessageType.PING)
    # ADD_PROVIDER for somebody else is ignored
    server.handle(a, pb.KadMessage(pb.MessageType.ADD_PROVIDER, b"mh", provider_peers=(pb.kad_peer(b),)), 0.0)
    assert server.providers.get(b"mh", 0.0) == []
    with pytest.raises(WireError):
        server.handle(a, pb.KadMessage(pb.MessageType.ADD_PROVIDER, b""), 0.0)
    # PUT_VALUE: forged, mismatched key, oversized key
    forged = make_record(net.idents[1], b"n", b"x", 1)
    victim_key = forged.key.replace(b.raw, a.raw)
    with pytest.raises(BadSignature):
        server.handle(b, pb.KadMessage(pb.MessageType.PUT_VALUE, victim_key, pb.KadRecord(victim_key, forged.encode())), 0.0)
    with pytest.raises(WireError):
        server.handle(b, pb.KadMessage(pb.MessageType.PUT_VALUE, b"other", pb.KadRecord(forged.key, forged.encode())), 0.0)
    with pytest.raises(WireError):
        server.handle(b, pb.request(pb.MessageType.FIND_NODE, b"x" * 5000), 0.0)
    # GET_VALUE for something not held: no record, closer peers
    reply = server.handle(a, pb.request(pb.MessageType.GET_VALUE, forged.key), 0.0)
    assert reply.record is None and len(reply.closer_peers) == K


def test_kad_peer_of_gives_the_same_answers_as_addrs_of(net):
    """A driver may hand over whole KadPeers (built once); the answers are the same."""
    a, c = net.peers[0], net.peers[5]
    base = net.servers[c]
    built = {p: pb.kad_peer(p, (net.addr[p],)) for p in net.peers}
    asked = []

    def kad_peer_of(peer):
        asked.append(peer)
        return built[peer]

    fast = KadServer(base.table, base.providers, base.records, k=K, kad_peer_of=kad_peer_of)
    base.providers.add(b"mh-kp", net.peers[7], 0.0, ())  # no addresses of its own: taken from the book
    for kind, key in [(pb.MessageType.FIND_NODE, b"some key"), (pb.MessageType.GET_PROVIDERS, b"mh-kp")]:
        expect = base.handle(a, pb.request(kind, key), 0.0)
        got = fast.handle(a, pb.request(kind, key), 0.0)
        assert got == expect and len(got.closer_peers) == K
        assert all(p.addrs == (net.addr[pb.peer_id_of(p)],) for p in got.closer_peers + got.provider_peers)
    assert net.peers[7] in asked and set(asked) <= set(net.peers)
