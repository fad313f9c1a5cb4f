import logging
import sys

import pytest

from p2pcompute.node.libp2p_transport import quiet_libp2p_logging

quiet_libp2p_logging(logging.CRITICAL)


@pytest.hookimpl(tryfirst=True)  # before ``-m 'not slow'`` deselects
def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.netns_twin(NODEID)``: a loopback test whose scenario the multi-host test NODEID repeats with
    each daemon on an address of its own. Where that test is collected too and network namespaces can be made
    (root, iproute2: as CI runs), the loopback twin is ``slow`` (it runs with ``-m slow``); elsewhere (not root,
    or only the twin's file run) it stays in the default suite, so the scenario is always covered by default."""
    twins = [item for item in items if item.get_closest_marker("netns_twin")]
    harness = sys.modules.get("netns_harness")          # imported by tests/netns/conftest.py when collected
    if not twins or harness is None or harness.unavailable_reason() is not None:
        return
    collected = {item.nodeid for item in items}
    for item in twins:
        if item.get_closest_marker("netns_twin").args[0] in collected:
            item.add_marker(pytest.mark.slow)
