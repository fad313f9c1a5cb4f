"""Storage test fixtures: one embedded kubo (loopback only) per test session."""

import pytest

from kubo import KuboNode  # tests/kubo.py (tests/ is on sys.path through tests/conftest.py)


@pytest.fixture(scope="session")
def kubo(tmp_path_factory):
    """A running kubo v0.22 with a temp repo: ``add``, ``cat``, ``peer_id``, ``multiaddr``."""
    node = KuboNode(tmp_path_factory.mktemp("kubo"))
    node.check_loopback()
    yield node
    node.check_loopback()
    node.close()
