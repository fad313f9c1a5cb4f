"""The harness itself: it leaves no namespace, veth, bridge or process behind, even after a crashed run."""

import subprocess
import time

import netns_harness


def ns_names():
    return netns_harness._netns_names()


def ns_pids(ns):
    return netns_harness.sh("ip", "netns", "pids", ns, check=False).stdout.split()


def test_closing_a_net_stops_its_processes_and_deletes_its_namespaces(make_net):
    net = make_net(2)
    net.start()
    net.impair(delay_ms=10)  # the delay forwarder runs in the harness namespace
    namespaces = [net.hub] + [d.ns for d in net.daemons]
    pids = [p for ns in namespaces for p in ns_pids(ns)]
    assert set(namespaces) <= set(ns_names()) and len(pids) >= 3
    net.close()
    assert not set(namespaces) & set(ns_names())
    assert all(not netns_harness._alive(int(p)) for p in pids)
    assert net.daemons[0].process.returncode == 0  # SIGTERM first: daemons shut down cleanly


def test_namespaces_left_by_a_run_that_died_are_removed(make_net):
    make_net(1)  # skips where namespaces cannot be made
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs: the "crashed test run"
    leftover = f"{netns_harness.FAMILY}-{gone.pid}-1-h"
    netns_harness.sh("ip", "netns", "add", leftover)
    orphan = subprocess.Popen(["ip", "netns", "exec", leftover, "sleep", "600"], start_new_session=True)
    try:
        netns_harness.sh("ip", "-n", leftover, "link", "add", "br0", "type", "bridge")
        deadline = time.monotonic() + 30
        while str(orphan.pid) not in ns_pids(leftover):  # `ip netns exec` has entered it
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert leftover in netns_harness.cleanup_leftovers()
        assert leftover not in ns_names()
        assert orphan.wait(10) == -9  # what ran in it was killed
    finally:
        if orphan.poll() is None:
            orphan.kill()
        netns_harness.sh("ip", "netns", "del", leftover, check=False)
