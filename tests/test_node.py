"""Nodes over real libp2p in one process: bootstrap, peer exchange, rejoin, notices."""

import random

import httpx
import trio

from p2pcompute.node.api import ControlApi, serve_api
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node


def make_node(i, bootstrap=(), data_dir=None, notices=None, ident=None):
    t = Libp2pTransport(ident or Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=2.0)
    return Node(t, resources=Resources(2.0, 1 << 30, {"n": str(i)}), bootstrap=list(bootstrap),
                data_dir=data_dir, rng=random.Random(i),
                on_notice=(lambda level, text: notices.append(text)) if notices is not None else None)


def boot_of(node):
    addr = node.transport.listen_addresses()[0]
    return (node.peer_id, [addr.split("/p2p/")[0]])


async def wait_for(cond, timeout=10.0):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


async def test_peers_find_each_other_through_one_bootstrap_peer():
    async with trio.open_nursery() as nursery:
        first = make_node(0)
        await nursery.start(first.run)
        others = [make_node(i, [boot_of(first)]) for i in range(1, 4)]
        for n in others:
            await nursery.start(n.run)
        everyone = [first] + others
        # peer exchange makes a full mesh although only `first` was given
        await wait_for(lambda: all(len(n.transport.connected_peers()) == 3 for n in everyone))
        await wait_for(lambda: all(len(n.records) == 3 for n in everyone))
        rows = {r["peer_id"]: r for r in others[0].peers()}
        assert rows[str(others[1].peer_id)]["labels"] == {"n": "2"}
        assert rows[str(first.peer_id)]["connected"]
        assert await others[2].ping(others[1].peer_id) > 0
        nursery.cancel_scope.cancel()


async def test_unreachable_bootstrap_gives_a_notice_and_the_node_still_serves():
    notices = []
    ghost = Identity.generate().peer_id
    async with trio.open_nursery() as nursery:
        lonely = make_node(0, [(ghost, ["/ip4/127.0.0.1/tcp/1"])], notices=notices)
        await nursery.start(lonely.run)
        await wait_for(lambda: notices)
        assert "none of the 1 bootstrap peers answered" in notices[0]
        # it accepts others all the same
        newcomer = make_node(1, [boot_of(lonely)])
        await nursery.start(newcomer.run)
        await wait_for(lambda: newcomer.peer_id in lonely.transport.connected_peers())
        nursery.cancel_scope.cancel()


async def test_control_api_requires_the_token_and_serves_status_peers_metrics():
    async with trio.open_nursery() as nursery:
        node = make_node(0)
        await nursery.start(node.run)
        url = await nursery.start(serve_api, ControlApi(node, "s3cret"), "127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/v1/status")).status_code == 401
            assert (await http.get("/v1/status", headers={"Authorization": "Bearer wrong"})).status_code == 401
            auth = {"Authorization": "Bearer s3cret"}
            status = (await http.get("/v1/status", headers=auth)).json()
            assert status["peer_id"] == str(node.peer_id) and status["resources"]["cpus"] == 2.0
            assert (await http.get("/v1/peers", headers=auth)).json() == {"peers": []}
            metrics = (await http.get("/metrics", headers=auth)).text
            assert "p2pcompute_connected_peers 0.0" in metrics
            bad = await http.post("/v1/ping", headers=auth, content=b"{not json")
            assert bad.status_code == 400 and "JSON" in bad.json()["error"]
            bad = await http.post("/v1/ping", headers=auth, json={"peer": "nope"})
            assert bad.status_code == 400
            assert (await http.get("/v1/nothing", headers=auth)).status_code == 404
        nursery.cancel_scope.cancel()
