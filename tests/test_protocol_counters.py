"""Messages and frame bytes per protocol (TransportStats), counted where the message counters are.

The counters are the transport's own (node/transport.py), shared by libp2p and memnet: each frame's bytes
go to the protocol its message type belongs to (wire.protocol_of: its package), a frame that does not
decode to ``invalid``, so the per-protocol bytes sum to the totals. /metrics exports them
(``p2pcompute_protocol_bytes_total{protocol, direction}``); the dashboard's machine page shows their rates.
"""

from __future__ import annotations

import re

import httpx
import trio

from p2pcompute.gossip import messages as gossip
from p2pcompute.node import wire
from p2pcompute.node.api import ControlApi, serve_api
from p2pcompute.node.identity import Identity
from p2pcompute.node.messages import Ping, Pong
from p2pcompute.node.transport import TransportStats
from p2pcompute.scheduler import messages as sched
from p2pcompute.simulations.memnet import MemNetwork

from test_node import boot_of, make_node, wait_for


def test_a_message_counts_under_its_own_protocol_even_where_type_names_clash():
    assert wire.protocol_of(Ping) == "node" and wire.protocol_of(gossip.Ping) == "membership"
    assert wire.spec_of(gossip.Ping(1)).protocol == "membership"
    assert {wire.spec_of(c).protocol for c in vars(sched).values()
            if isinstance(c, type) and c in wire.registered_types().values()} == {"scheduler"}
    stats = TransportStats()
    stats.count_sent(Ping(1), 40)
    stats.count_sent(gossip.Ping(1), 25)
    stats.count_sent(gossip.Ping(2), 25)
    stats.count_received(Pong(1), 30)
    stats.count_received(None, 7)                        # a frame that did not decode
    assert stats.sent == {"Ping": 3} and stats.received == {"Pong": 1}
    assert stats.protocol_sent == {"node": 1, "membership": 2} and stats.protocol_received == {"node": 1}
    assert stats.protocol_bytes_sent == {"node": 40, "membership": 50}
    assert stats.protocol_bytes_received == {"node": 30, "invalid": 7}
    assert sum(stats.protocol_bytes_sent.values()) == stats.bytes_sent == 90
    assert sum(stats.protocol_bytes_received.values()) == stats.bytes_received == 37


async def test_memnet_frames_are_counted_by_protocol_and_sum_to_the_totals(autojump_clock):
    net = MemNetwork(1)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        a, b = [await net.start_peer(nursery, Identity.from_seed(bytes([i]) * 32)) for i in (1, 2)]

        async def pong(peer, msg):
            return Pong(msg.nonce)

        b.on_request(Ping, pong)
        for k in range(5):
            assert await a.request(b.local_id, Ping(k, b"x" * 100)) == Pong(k)
        await a.send(b.local_id, gossip.Ping(1))
        await wait_for(lambda: b.stats.protocol_received["membership"] == 1)
        b._on_frame(a.local_id, b"\xff not a frame")
        assert a.stats.protocol_sent == {"node": 5, "membership": 1} and b.stats.protocol_sent == {"node": 5}
        assert a.stats.protocol_bytes_sent["node"] > 5 * 100
        assert a.stats.protocol_bytes_sent["node"] == b.stats.protocol_bytes_received["node"]
        assert b.stats.protocol_bytes_received["invalid"] == len(b"\xff not a frame")
        for s in (a.stats, b.stats):
            assert sum(s.protocol_bytes_sent.values()) == s.bytes_sent
            assert sum(s.protocol_bytes_received.values()) == s.bytes_received
        nursery.cancel_scope.cancel()


def scraped(text: str, protocol: str, direction: str) -> float:
    m = re.search(r'^p2pcompute_protocol_bytes_total\{(?=[^}]*direction="%s")(?=[^}]*protocol="%s")[^}]*\} (\S+)$'
                  % (direction, protocol), text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_metrics_carries_bytes_per_protocol_after_traffic_between_two_nodes():
    async with trio.open_nursery() as nursery:
        first = make_node(0)
        await nursery.start(first.run)
        second = make_node(1, [boot_of(first)])
        await nursery.start(second.run)
        await wait_for(lambda: second.peer_id in first.transport.connected_peers())
        assert await first.ping(second.peer_id) > 0
        url = await nursery.start(serve_api, ControlApi(first, "s3cret"), "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=url) as http:
            text = (await http.get("/metrics", headers={"Authorization": "Bearer s3cret"})).text
        stats = first.transport.stats               # the nodes go on talking: it only grows after the scrape
        assert 0 < scraped(text, "node", "sent") <= stats.protocol_bytes_sent["node"]
        assert 0 < scraped(text, "node", "received") <= stats.protocol_bytes_received["node"]
        total_sent = float(re.search(r"^p2pcompute_bytes_sent_total (\S+)$", text, re.M).group(1))
        per_protocol = re.findall(r'^p2pcompute_protocol_bytes_total\{[^}]*direction="sent"[^}]*\} (\S+)$', text, re.M)
        assert sum(map(float, per_protocol)) == total_sent      # read in one scrape: the same counters
        assert re.search(r'^p2pcompute_protocol_messages_total\{direction="sent",protocol="node"\} [1-9]', text, re.M)
        nursery.cancel_scope.cancel()
