"""Peers on different addresses, as on different hosts: discovery, partitions, crashes (``netns_harness.py``)."""

import signal

import pytest

import netns_harness  # tests/netns/ is on sys.path (rootdir conftest, no __init__.py)

ALIVE = ("alive",)
GONE = ("dead", "left")


def converge(net, who=None, timeout=90):
    who = list(range(net.n) if who is None else who)
    return net.wait_until(f"daemons {who} all see each other alive",
                          lambda: net.all_see(who, who, ALIVE), timeout)


def test_peers_listening_on_any_address_advertise_and_record_only_routable_addresses(make_net):
    net = make_net(5)
    net.start(any_address=True)  # --listen /ip4/0.0.0.0/tcp/4001, as a user on a LAN would
    converge(net)
    for d in net.daemons:
        advertised = net.api(d.index, "GET", "/v1/status")["addresses"]  # may list loopback: for local users
        assert any(f"/ip4/{d.address}/" in a for a in advertised), advertised
        assert len(advertised) == len(set(advertised)), f"daemon {d.index} lists an address twice: {advertised}"
    by_id = {d.peer_id: d for d in net.daemons}

    def records_arrived():  # each peer's record (with its addresses) comes a moment after membership news
        return all(len(rows) == 4 and all(r["addresses"] for r in rows)
                   for rows in (net.api(d.index, "GET", "/v1/peers")["peers"] for d in net.daemons))

    net.wait_until("every peer holds every other's record", records_arrived, 60)
    for d in net.daemons:
        for row in net.api(d.index, "GET", "/v1/members")["members"]:
            assert row["address"].startswith(f"/ip4/{by_id[row['peer_id']].address}/"), (d.index, row)
        for row in net.api(d.index, "GET", "/v1/peers")["peers"]:
            other = by_id[row["peer_id"]]
            for a in row["addresses"]:
                assert a.startswith(f"/ip4/{other.address}/"), (d.index, row["addresses"])


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """A started and converged 5-daemon net shared by this module's tests (starting one costs seconds).

    Each test gets it only while it is whole (every daemon running, none frozen): the partition test heals it
    and waits until it converged again; the kill test, which leaves it broken, comes last, and a test that
    asks for it after a kill gets a fresh net.
    """
    reason = netns_harness.unavailable_reason()
    if reason:
        pytest.skip(f"multi-host tests need network namespaces: {reason}")
    netns_harness.cleanup_leftovers()
    nets = []

    def get(converged: bool = True) -> netns_harness.Net:
        """The net, every daemon seeing every other alive (unless ``converged=False`` on a fresh net)."""
        if nets and all(d.running() and not d.stopped for d in nets[-1].daemons):
            converge(nets[-1])
            return nets[-1]
        if nets:
            nets[-1].close()
        net = netns_harness.Net(tmp_path_factory.mktemp("five"), 5).__enter__()
        nets.append(net)
        net.start()  # 1..4 know only /ip4/10.77.0.1/tcp/4001/p2p/<daemon 0>
        if converged:
            converge(net)
        return net

    try:
        yield get
    finally:
        for net in nets:
            net.close()


def test_five_peers_on_five_addresses_find_each_other_through_one_bootstrap_address(five):
    net = five(converged=False)  # the module's first test: a fresh net
    took = converge(net)
    print(f"5 peers: every peer saw the other 4 alive {took:.1f} s after all served")
    for d in net.daemons:
        status = net.api(d.index, "GET", "/v1/status")
        assert f"/ip4/{d.address}/tcp/4001/p2p/{d.peer_id}" in status["addresses"]
        view = net.members(d.index)
        others = {o.peer_id for o in net.daemons if o is not d}
        assert {p for p, s in view.items() if s == "alive"} >= others
        # peers 2..4 were told only of daemon 0: they met the rest through the network, on the rest's own addresses
        connected = {row["peer_id"] for row in net.api(d.index, "GET", "/v1/peers")["peers"] if row["connected"]}
        assert connected, f"daemon {d.index} holds no connection"


def test_a_partition_splits_the_network_and_healing_rejoins_it(five):
    net = five()
    left, right = [0, 1], [2, 3, 4]
    net.partition(left, right)
    split = net.wait_until("each side of {0,1} | {2,3,4} declares the other dead, and stays whole itself",
                           lambda: net.all_see(left, right, GONE) and net.all_see(right, left, GONE)
                           and net.all_see(left, left, ALIVE) and net.all_see(right, right, ALIVE), 90)
    print(f"partition: both sides declared the other dead after {split:.1f} s")
    net.heal()
    healed = converge(net, timeout=120)
    print(f"healed: every peer saw every other alive again after {healed:.1f} s")


def test_a_killed_and_a_frozen_peer_are_declared_dead_by_all_others(five):
    net = five()
    watchers = [0, 1, 2]
    for victim, sig in ((4, signal.SIGKILL), (3, signal.SIGSTOP)):  # SIGSTOP: its connections stay open
        others = [i for i in range(5) if i != victim and not net.daemons[i].stopped and net.daemons[i].running()]
        net.signal(victim, sig)
        took = net.wait_until(f"daemons {others} declare the {sig.name}ed daemon {victim} dead",
                              lambda others=others, victim=victim: net.all_see(others, [victim], GONE), 30)
        print(f"{sig.name}: daemon {victim} declared dead by all {len(others)} others after {took:.1f} s "
              "(issue 9 wants <= 10 s)")
    converge(net, watchers)  # no live peer dragged down with them
