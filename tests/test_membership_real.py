"""Membership over real libp2p: in-process nodes, and a devnet of OS processes killed and frozen."""

import os
import random
import signal
import time

import pytest
import trio

from p2pcompute.gossip.events import MembershipConfig, TimerKind
from p2pcompute.gossip.messages import Gossip
from p2pcompute.gossip.service import MembershipService
from p2pcompute.node.client import ControlClient
from p2pcompute.node.devnet import Devnet
from p2pcompute.node.identity import Identity
from p2pcompute.node.libp2p_transport import Libp2pTransport
from p2pcompute.node.messages import Resources
from p2pcompute.node.node import Node
from hostile import (fake_member_gossip, fake_members, forged_incarnations,  # tests/hostile.py
                     poisoned_claim, poisoned_others, serve_poisoned_exchange)


def make_node(i, bootstrap=(), config=None):
    t = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=2.0)
    return Node(t, resources=Resources(1.0 + i, 1 << 30, {"i": str(i)}), bootstrap=list(bootstrap),
                rng=random.Random(i), services=[MembershipService(config, rng=random.Random(100 + i))])


def address_of(node):
    return node.transport.listen_addresses()[0].split("/p2p/")[0]


async def wait_for(cond, timeout=20.0):
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.05)


def states(node):
    return {r["peer_id"]: r["state"] for r in node.services["membership"].member_rows()}


async def test_members_learn_each_other_with_capabilities_and_see_a_clean_leave():
    async with trio.open_nursery() as nursery:
        first = make_node(0)
        await nursery.start(first.run)
        boot = (first.peer_id, [first.transport.listen_addresses()[0].split("/p2p/")[0]])
        others = []
        scopes = []
        for i in range(1, 4):
            scope = trio.CancelScope()
            node = make_node(i, [boot])

            async def run(node=node, scope=scope, task_status=trio.TASK_STATUS_IGNORED):
                with scope:
                    await node.run(task_status=task_status)

            await nursery.start(run)
            others.append(node)
            scopes.append(scope)
        everyone = [first] + others
        await wait_for(lambda: all(list(states(n).values()).count("alive") == 3 for n in everyone))
        row = next(r for r in first.peers() if r["peer_id"] == str(others[1].peer_id))
        assert row["state"] == "alive" and row["cpus"] == 3.0 and row["labels"] == {"i": "2"} and row["arch"]
        scopes[2].cancel()  # a clean shutdown announces the leave
        leaver = str(others[2].peer_id)
        await wait_for(lambda: all(states(n).get(leaver) == "left" for n in everyone[:3]), timeout=10)
        nursery.cancel_scope.cancel()


@pytest.mark.netns_twin("tests/netns/test_netns_membership.py::test_a_killed_and_a_frozen_peer_are_declared_dead_by_all_others")
def test_devnet_peer_killed_or_frozen_is_seen_dead_by_all(tmp_path):
    net = Devnet(tmp_path, 5, log_level="warning")
    frozen = None
    try:
        net.start()

        def members(peer):
            client = ControlClient(peer.data_dir, timeout=10)
            try:
                return {m["peer_id"]: m["state"] for m in client._call("GET", "/v1/members")["members"]}
            finally:
                client.close()

        def wait_all(watchers, predicate, timeout):
            start = time.monotonic()
            while time.monotonic() - start < timeout:
                if all(predicate(members(p)) for p in watchers):
                    return time.monotonic() - start
                time.sleep(0.1)
            raise AssertionError(f"not reached in {timeout} s: {[members(p) for p in watchers]}")

        wait_all(net.peers, lambda m: list(m.values()).count("alive") == 4, 60)
        killed, frozen = net.peers[4], net.peers[3]
        os.kill(killed.process.pid, signal.SIGKILL)
        took = wait_all(net.peers[:4], lambda m: m[killed.status["peer_id"]] == "dead", 30)
        print(f"SIGKILL seen dead by all in {took:.1f} s")
        os.kill(frozen.process.pid, signal.SIGSTOP)  # hung: its connections stay open
        took = wait_all(net.peers[:3], lambda m: m[frozen.status["peer_id"]] == "dead", 30)
        print(f"SIGSTOP seen dead by all in {took:.1f} s")
        # and `peers` shows it
        client = ControlClient(net.peers[0].data_dir)
        rows = {r["peer_id"]: r["state"] for r in client.peers()}
        assert rows[killed.status["peer_id"]] == "dead" and rows[frozen.status["peer_id"]] == "dead"
    finally:
        if frozen is not None and frozen.process.poll() is None:
            os.kill(frozen.process.pid, signal.SIGCONT)
        net.stop()


async def test_a_hostile_peer_cannot_crash_a_daemon_with_a_forged_incarnation():
    """Issue 9: Update(victim, alive, 2^63-1) made the victim overflow its incarnation and die."""
    fast = MembershipConfig(push_pull_interval=0.5)  # push-pull built the update that raised
    async with trio.open_nursery() as nursery:
        victim = make_node(0, config=fast)
        await nursery.start(victim.run)
        honest = make_node(1, [(victim.peer_id, [address_of(victim)])], config=fast)
        await nursery.start(honest.run)
        await wait_for(lambda: states(victim).get(str(honest.peer_id)) == "alive"
                       and states(honest).get(str(victim.peer_id)) == "alive")
        hostile = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=2.0)
        await nursery.start(hostile.run)
        v = victim.peer_id
        for target in (victim, honest):  # straight to the victim, and through a third peer
            await hostile.connect(f"{address_of(target)}/p2p/{target.peer_id}")
            for update in forged_incarnations(v):
                await hostile.send(target.peer_id, Gossip(updates=(update,)))
        vsm, hsm = victim.services["membership"].sm, honest.services["membership"].sm
        await wait_for(lambda: vsm.stats["implausible_updates"] >= 2 and hsm.stats["implausible_updates"] >= 2)
        pulls = vsm.stats["probes"]
        await wait_for(lambda: vsm.stats["probes"] >= pulls + 4)  # several probe and push-pull rounds later
        assert vsm.incarnation < 2 and hsm.member(v).incarnation < 2
        # alive both ways (waited for: on a loaded machine a probe may time out for a moment)
        await wait_for(lambda: states(honest)[str(v)] == "alive" and states(victim)[str(honest.peer_id)] == "alive")
        assert await honest.ping(v, timeout=10) >= 0  # and it still serves
        assert victim.services["membership"].errors == 0
        nursery.cancel_scope.cancel()


async def test_a_state_machine_exception_is_logged_and_the_daemon_keeps_probing(caplog):
    async with trio.open_nursery() as nursery:
        node = make_node(0)
        await nursery.start(node.run)
        other = make_node(1, [(node.peer_id, [address_of(node)])])
        await nursery.start(other.run)
        await wait_for(lambda: states(node).get(str(other.peer_id)) == "alive")
        service = node.services["membership"]
        real = service.sm.handle

        def broken_once(event, now):
            if getattr(event, "kind", None) is TimerKind.PROBE and not service.errors:
                service.sm._timers.pop(TimerKind.PROBE, None)
                raise RuntimeError("a bug in a timer")
            return real(event, now)

        service.sm.handle = broken_once
        await wait_for(lambda: service.errors == 1)
        probes = service.sm.stats["probes"]
        await wait_for(lambda: service.sm.stats["probes"] >= probes + 3)
        assert "a bug in a timer" in caplog.text and service.status()["errors"] == 1
        nursery.cancel_scope.cancel()


async def test_a_hostile_peer_gossiping_50000_made_up_members_cannot_fill_or_stall_a_daemon():
    """Issue 9: 50,000 fake 'alive' members were accepted unchecked and dialled."""
    fakes = fake_members(50_000)
    async with trio.open_nursery() as nursery:
        victim = make_node(0)
        await nursery.start(victim.run)
        honest = make_node(1, [(victim.peer_id, [address_of(victim)])])
        await nursery.start(honest.run)
        await wait_for(lambda: states(victim).get(str(honest.peer_id)) == "alive")
        hostile = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=2.0)
        await nursery.start(hostile.run)
        await hostile.connect(f"{address_of(victim)}/p2p/{victim.peer_id}")
        start = trio.current_time()
        for gossip in fake_member_gossip(fakes):
            await hostile.send(victim.peer_id, gossip)
        sm, cfg = victim.services["membership"].sm, victim.services["membership"].config
        await wait_for(lambda: sm.stats["new_members_refused"] > 40_000, timeout=60)
        await trio.sleep(2.0)  # a few probe periods with the flood in the table
        elapsed = trio.current_time() - start
        assert len(sm.table) <= 1 + cfg.new_member_burst + cfg.new_member_rate * elapsed
        dialled = sum(1 for p in fakes if victim.transport.addresses_of(p))
        assert dialled <= elapsed / cfg.probe_interval + 8  # probes alone dial them, one a period
        await wait_for(lambda: states(victim)[str(honest.peer_id)] == "alive"
                       and states(honest)[str(victim.peer_id)] == "alive")
        assert await honest.ping(victim.peer_id, timeout=10) >= 0
        nursery.cancel_scope.cancel()


async def test_poisoned_peer_records_are_refused_and_peers_still_answers():
    """Issue 9: a signed Hello with memory = 10**5000 was accepted, forwarded, and broke /v1/peers."""
    import json

    from p2pcompute.errors import RemoteError
    from p2pcompute.node.api import _json
    from p2pcompute.node.messages import Hello

    others, bad = poisoned_others()
    hostile = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=2.0)
    served = serve_poisoned_exchange(hostile, bad)  # peer exchange forwards the poison
    async with trio.open_nursery() as nursery:
        victim = make_node(0)
        await nursery.start(victim.run)
        await nursery.start(hostile.run)
        await hostile.connect(f"{address_of(victim)}/p2p/{victim.peer_id}")
        for claim in [poisoned_claim(hostile.identity, memory=10**5000), *bad]:
            try:
                await hostile.request(victim.peer_id, Hello(claim), timeout=10)
            except RemoteError:
                pass  # refused, as it should be
        await wait_for(lambda: served and hostile.local_id in victim.records)
        await trio.sleep(0.5)
        assert not any(o.peer_id in victim.records for o in others)
        body = json.loads(_json({"peers": victim.peers()}), parse_constant=lambda c: pytest.fail(c))
        assert str(hostile.local_id) in {row["peer_id"] for row in body["peers"]}
        nursery.cancel_scope.cancel()
