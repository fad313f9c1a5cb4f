"""The same Node code on the in-memory network, in virtual time, replayable."""

import random

import trio
import trio.testing

from p2pcompute.node.identity import Identity
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from p2pcompute.simulations.memnet import MemNetwork, deterministic_trio


async def form_network(seed: int, n: int, loss: float) -> list:
    """Start n nodes bootstrapped to the first; return what each knows after 30 virtual s."""
    net = MemNetwork(seed, latency=(0.02, 0.12), loss=loss)
    idents = [Identity.from_seed(random.Random(seed * 1000 + i).randbytes(32)) for i in range(n)]
    nodes = []
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        for i, ident in enumerate(idents):
            t = net.add_peer(ident, default_timeout=2.0)
            boot = [(idents[0].peer_id, [idents[0].peer_id.text])] if i else []
            node = Node(t, resources=Resources(1.0 + i, 1 << 30, {}), bootstrap=boot, target_peers=8,
                        rng=random.Random(seed + i), wall_clock=trio.current_time)
            nodes.append(node)
            await nursery.start(node.run)
        await trio.sleep(30)
        result = [(len(node.transport.connected_peers()), len(node.records)) for node in nodes]
        nursery.cancel_scope.cancel()
    return result


def run_virtual(seed, n, loss):
    with deterministic_trio(seed):
        return trio.run(form_network, seed, n, loss, clock=trio.testing.MockClock(autojump_threshold=0))


def test_twenty_nodes_form_a_network_through_one_bootstrap_peer_despite_loss():
    result = run_virtual(seed=3, n=20, loss=0.01)
    # everyone connected to its target of 8 (or more: others dial it too) and learned many records
    assert all(connected >= 8 for connected, _ in result), result
    assert all(known >= 8 for _, known in result), result


def test_a_seed_replays_exactly():
    assert run_virtual(seed=5, n=10, loss=0.05) == run_virtual(seed=5, n=10, loss=0.05)


async def _node_cancelled_after(delay: float) -> tuple[bool, bool]:
    net = MemNetwork(1)
    transport = net.add_peer(Identity.from_seed(b"\x01" * 32))
    node = Node(transport, resources=Resources(1.0, 1 << 30, {}))
    returned = False
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        with trio.move_on_after(60):  # a hang would end here, with returned still False
            with trio.CancelScope() as scope:
                if delay <= 0:
                    scope.cancel()
                else:
                    nursery.start_soon(_cancel_later, scope, delay)
                await node.run()
            returned = True
        nursery.cancel_scope.cancel()
    return returned, transport.running


async def _cancel_later(scope: trio.CancelScope, delay: float) -> None:
    await trio.sleep(delay)
    scope.cancel()


def test_a_node_cancelled_while_starting_or_running_stops_with_its_transport():
    for delay in (0.0, 5.0):  # cancelled before the transport is up; and once running
        returned, running = trio.run(_node_cancelled_after, delay, clock=trio.testing.MockClock(autojump_threshold=0))
        assert returned and not running
