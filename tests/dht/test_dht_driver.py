"""The DHT service over real libp2p peers in one process: lookups, providers, values, bad bytes."""

from __future__ import annotations

import random
from dataclasses import replace

import httpx
import pytest
import trio

from p2pcompute.errors import WireError

from p2pcompute.dht import pb
from p2pcompute.dht.driver import DEFAULT_PROTOCOL, LAN_PROTOCOL, content_key
from p2pcompute.dht.service import DhtConfig, DhtService
from p2pcompute.node.api import ControlApi, serve_api
from p2pcompute.node.framing import FrameReader, encode_varint
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.node.transport import ProtocolNotSupported

CONFIG = DhtConfig(k=4, alpha=2, query_timeout=3.0, lookup_timeout=20.0, bootstrap_interval=0.5)


def make_node(i, bootstrap=(), config=CONFIG):
    t = Libp2pTransport(Identity.from_seed(bytes([i + 1]) * 32), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=3.0)
    dht = DhtService(config, rng=random.Random(i))
    # target_peers=1: peering alone does not make a mesh; the DHT has to find peers itself
    node = Node(t, resources=Resources(1.0, 1 << 30, {}), bootstrap=list(bootstrap), target_peers=1,
                rng=random.Random(i), services=[dht])
    return node, dht


def boot_of(node):
    return (node.peer_id, [node.transport.listen_addresses()[0].split("/p2p/")[0]])


async def wait_for(cond, timeout=10.0):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


async def start_chain(nursery, n, config=CONFIG):
    nodes = []
    for i in range(n):
        node, dht = make_node(i, [boot_of(nodes[-1][0])] if nodes else (), config)
        await nursery.start(node.run)
        nodes.append((node, dht))
    await wait_for(lambda: all(len(d.table) >= 1 for _, d in nodes))
    return nodes


async def test_find_peer_across_a_chain_of_nine():
    async with trio.open_nursery() as nursery:
        nodes = await start_chain(nursery, 9)
        first, last = nodes[0], nodes[-1]
        # before looking, the ends of the chain know nothing of each other
        assert last[0].peer_id not in first[1].table
        for i, (node, _dht) in enumerate(nodes):
            asker = nodes[(i + 4) % len(nodes)][1]
            answer = await asker.find_peer(node.peer_id)
            assert answer["found"], (i, answer)
            assert answer["addresses"] == [boot_of(node)[1][0]]
        answer = await first[1].find_peer(last[0].peer_id)
        assert answer["found"] and answer["hops"] >= 1 and answer["connected"]
        stranger = Identity.generate().peer_id
        missing = await first[1].find_peer(stranger)
        assert not missing["found"] and missing["addresses"] == []
        status = first[1].status()
        assert status["routing_table"] >= 3 and status["lookups"] >= 2
        # kad frames on their own streams count under protocol "dht" in the transport's counters (/metrics,
        # the dashboard), both ways, and in the byte totals
        for node, dht in nodes:
            stats = node.transport.stats
            assert stats.protocol_bytes_sent["dht"] > 0 and stats.protocol_bytes_received["dht"] > 0
            assert stats.protocol_sent["dht"] >= dht.client.sent.total()
            assert sum(stats.protocol_bytes_sent.values()) == stats.bytes_sent
        nursery.cancel_scope.cancel()


async def test_providers_and_signed_values_across_a_chain():
    async with trio.open_nursery() as nursery:
        nodes = await start_chain(nursery, 7)
        key = content_key("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
        assert key[:2] == b"\x12\x20"  # a CID maps to its multihash, as kubo does
        provider, seeker = nodes[0], nodes[-1]
        result = await provider[1].provide(key)
        assert result["announced_to"] >= 1
        found = await seeker[1].find_providers(key)
        assert [p["peer_id"] for p in found] == [str(provider[0].peer_id)]
        assert found[0]["addresses"] == [boot_of(provider[0])[1][0]]
        # a key nobody provides: an empty answer, not an error
        assert await seeker[1].find_providers(content_key("nobody has this")) == []
        assert provider[1].status()["providing"] == 1
        # signed values: the newest version wins, read from the other end
        writer = nodes[1]
        first = await writer[1].put_value(b"capability", b"v1")
        second = await writer[1].put_value(b"capability", b"v2")
        assert second["seq"] > first["seq"] and second["stored_on"] >= 1
        record = await seeker[1].get_value(bytes.fromhex(second["key"]))
        assert record is not None and record.value == b"v2" and record.author == writer[0].peer_id
        nursery.cancel_scope.cancel()


async def test_a_peer_that_goes_away_mid_lookup_does_not_break_it():
    async with trio.open_nursery() as nursery:
        nodes = []
        scopes = []
        for i in range(7):
            node, dht = make_node(i, [boot_of(nodes[-1][0])] if nodes else ())
            scope = trio.CancelScope()
            scopes.append(scope)

            async def run(node=node, scope=scope, task_status=trio.TASK_STATUS_IGNORED):
                with scope:
                    await node.run(task_status=task_status)

            await nursery.start(run)
            nodes.append((node, dht))
        await wait_for(lambda: all(len(d.table) >= 1 for _, d in nodes))
        asker, target = nodes[0], nodes[6]
        # warm the asker's table so it holds the peer that will vanish
        await asker[1].find_peer(target[0].peer_id)
        victim_index = next(i for i in range(1, 6) if nodes[i][0].peer_id in asker[1].table)
        victim = nodes[victim_index]
        found = trio.Event()
        answers = []

        async def look():
            answers.append(await asker[1].find_peer(target[0].peer_id))
            found.set()

        nursery.start_soon(look)
        scopes[victim_index].cancel()  # its host closes while the lookup runs
        await found.wait()
        assert answers[0]["found"]
        # a peer that stops answering (every request refused from now on): lookups go on
        # without it, and the table drops it once the failure is confirmed by a ping
        other_index = next(i for i in range(1, 6) if i != victim_index and nodes[i][0].peer_id in asker[1].table)
        silent = nodes[other_index]

        def refuse(sender, msg, now):
            raise WireError("refusing everything")

        silent[1].server.handle = refuse
        answer = await asker[1].find_peer(silent[0].peer_id)
        assert answer["connected"]  # still connected: "found" here means only that
        await wait_for(lambda: silent[0].peer_id not in asker[1].table, timeout=2 * CONFIG.query_timeout + 2)
        assert (await asker[1].find_peer(target[0].peer_id))["found"]
        nursery.cancel_scope.cancel()


async def test_malformed_kad_bytes_are_dropped_and_the_service_keeps_serving():
    async with trio.open_nursery() as nursery:
        nodes = await start_chain(nursery, 3)
        server, client = nodes[1], nodes[2]
        transport = client[0].transport
        garbage = [
            encode_varint(5) + b"\xff\xff\xff\xff\xff",  # a truncated varint inside
            encode_varint(3) + b"\x08\x63\x00",  # unknown message type 99, then junk
            encode_varint(1 << 30),  # a frame announced far over the limit
        ]
        for bad in garbage:
            stream = await transport.open_stream(server[0].peer_id, CONFIG.protocol)
            await stream.write(bad)
            with trio.fail_after(3):
                assert await stream.read() == b""  # reset or closed, no answer
        assert sum(server[1].status()["rejected"].values()) == len(garbage)
        # a well-formed request on a new stream is answered
        stream = await transport.open_stream(server[0].peer_id, CONFIG.protocol)
        await stream.write(pb.frame(pb.request(pb.MessageType.FIND_NODE, client[0].peer_id.raw)))
        reply = pb.decode(await FrameReader(stream, 1 << 20).read_frame())
        assert reply.type is pb.MessageType.FIND_NODE
        # several requests on one stream (as go-libp2p reuses streams)
        await stream.write(pb.frame(pb.request(pb.MessageType.PING)))
        assert pb.decode(await FrameReader(stream, 1 << 20).read_frame()).type is pb.MessageType.PING
        await stream.close()
        assert server[1].status()["served"]["FIND_NODE"] >= 1
        nursery.cancel_scope.cancel()


async def test_protocol_id_is_configurable_and_private():
    async with trio.open_nursery() as nursery:
        lan = DhtConfig(protocols=(LAN_PROTOCOL,), k=4, query_timeout=1.0)
        a, da = make_node(0, (), lan)
        await nursery.start(a.run)
        b, db = make_node(1, [boot_of(a)], replace(CONFIG, protocols=(DEFAULT_PROTOCOL,)))  # ours only
        await nursery.start(b.run)
        c, dc = make_node(2, [boot_of(a)], lan)
        await nursery.start(c.run)
        await wait_for(lambda: c.peer_id in da.table and a.peer_id in dc.table)
        await wait_for(lambda: b.peer_id in a.transport.connected_peers())
        await trio.sleep(0.3)
        # b is connected but does not speak /ipfs/lan/kad/1.0.0: never admitted
        assert b.peer_id not in da.table and len(db.table) == 0
        nursery.cancel_scope.cancel()


async def test_a_peer_that_speaks_only_the_lan_protocol_is_asked_in_it():
    """The default config serves and asks both protocols: a LAN-only peer (as a kubo) joins the table."""
    async with trio.open_nursery() as nursery:
        lan_only = replace(CONFIG, protocols=(LAN_PROTOCOL,))
        a, da = make_node(0, (), lan_only)
        await nursery.start(a.run)
        b, db = make_node(1, [boot_of(a)])  # both protocols (the default)
        await nursery.start(b.run)
        c, dc = make_node(2, [boot_of(b)], replace(CONFIG, protocols=(DEFAULT_PROTOCOL,)))
        await nursery.start(c.run)
        await wait_for(lambda: a.peer_id in db.table and b.peer_id in da.table and c.peer_id in db.table)
        assert db.client.protocol_of(a.peer_id) == LAN_PROTOCOL
        assert db.client.protocol_of(c.peer_id) == DEFAULT_PROTOCOL
        # b refused by a once for ours; not asked again on this connection
        assert DEFAULT_PROTOCOL in b.transport._unsupported.get(a.peer_id, set())
        with trio.fail_after(0.5):  # answered from memory, without asking a again
            with pytest.raises(ProtocolNotSupported):
                await b.transport.open_stream(a.peer_id, DEFAULT_PROTOCOL)
        # c asks b for a (b answers c in ours, naming a), then a: found only if b could ask a in LAN
        await db.provide(content_key("lan data"))
        assert [p["peer_id"] for p in await da.find_providers(content_key("lan data"))] == [str(b.peer_id)]
        assert (await dc.find_peer(b.peer_id))["found"]
        nursery.cancel_scope.cancel()


async def test_control_api_routes():
    async with trio.open_nursery() as nursery:
        nodes = await start_chain(nursery, 4)
        node, dht = nodes[0]
        url = await nursery.start(serve_api, ControlApi(node, "tok"), "127.0.0.1", 0)
        auth = {"Authorization": "Bearer tok"}
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=20) as http:
            r = await http.post("/v1/dht/provide", json={"key": "hello world"})
            assert r.status_code == 200 and r.json()["key"] == b"hello world".hex()
            r = await http.get("/v1/dht/providers", params={"key": "hello world"})
            assert r.json()["providers"][0]["peer_id"] == str(node.peer_id)
            target = nodes[3][0].peer_id
            r = await http.get("/v1/dht/find-peer", params={"peer": str(target)})
            assert r.status_code == 200 and r.json()["found"]
            assert (await http.get("/v1/dht/find-peer", params={"peer": "nope"})).status_code == 400
            assert (await http.post("/v1/dht/provide", json={})).status_code == 400
            status = (await http.get("/v1/status")).json()
            assert status["dht"]["providing"] == 1 and status["dht"]["routing_table"] >= 1
        nursery.cancel_scope.cancel()


async def test_the_eviction_check_is_a_kad_ping_that_a_live_peer_answers():
    from p2pcompute.dht.routing import PingPeer

    async with trio.open_nursery() as nursery:
        (a, da), (b, db) = await start_chain(nursery, 2)
        assert b.peer_id in da.table
        before = db.table.pending_pings()
        await da._ping(PingPeer(b.peer_id, trio.current_time() + 3.0))
        assert da.client.sent["PING"] == 1 and b.peer_id in da.table  # answered: it stays
        assert db.table.pending_pings() == before  # and the pinged peer starts no check of its own
        nursery.cancel_scope.cancel()


def test_replies_to_a_peer_off_this_host_carry_no_loopback_or_link_local_addresses():
    from p2pcompute.dht.driver import reply_for
    from p2pcompute.node.identity import Identity

    a, b = Identity.generate().peer_id, Identity.generate().peer_id
    raw = [pb.addr_to_bytes(x) for x in ("/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.7/tcp/4001",
                                         "/ip4/169.254.1.1/tcp/4001")]
    reply = pb.KadMessage(pb.MessageType.GET_PROVIDERS, b"k", closer_peers=(pb.kad_peer(a, tuple(raw)),),
                          provider_peers=(pb.kad_peer(b, (raw[0],)),))
    lan = reply_for(reply, "10.0.0.9")
    assert pb.peer_addrs(lan.closer_peers[0]) == ["/ip4/10.0.0.7/tcp/4001"]
    assert lan.provider_peers[0].addrs == () and lan.provider_peers[0].id == bytes(b)
    local = reply_for(reply, "127.0.0.1")  # a peer on this host may use loopback, never link-local
    assert pb.peer_addrs(local.closer_peers[0]) == ["/ip4/127.0.0.1/tcp/4001", "/ip4/10.0.0.7/tcp/4001"]
    assert reply_for(pb.KadMessage(pb.MessageType.PING), "10.0.0.9") == pb.KadMessage(pb.MessageType.PING)
