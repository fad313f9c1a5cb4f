"""Fixtures for the multi-host tests: ``make_net(n)`` gives a ``Net`` of n namespaces, always torn down.

Skips (with the reason) where namespaces cannot be made: not Linux, not root,
no iproute2, or a sandbox that refuses them. See ``netns_harness.py``.
"""

import atexit

import pytest

import netns_harness  # tests/netns/ is on sys.path (rootdir conftest, no __init__.py)

atexit.register(netns_harness.close_all)  # an interrupted run still removes its namespaces


@pytest.fixture
def make_net(tmp_path):
    reason = netns_harness.unavailable_reason()
    if reason:
        pytest.skip(f"multi-host tests need network namespaces: {reason}")
    netns_harness.cleanup_leftovers()
    nets = []

    def make(n: int) -> netns_harness.Net:
        net = netns_harness.Net(tmp_path / f"net{len(nets)}", n)
        nets.append(net)
        return net.__enter__()

    try:
        yield make
    finally:
        for net in nets:
            net.close()
