"""The per-peer token bucket of inbound kad requests (pure, time given)."""

import pytest

from p2pcompute.node.ratelimit import PeerRateLimiter


def test_a_burst_is_served_then_requests_wait_then_are_dropped():
    rl = PeerRateLimiter(rate=10.0, burst=5, max_wait=0.5)
    assert [rl.reserve("a", 0.0) for _ in range(5)] == [0.0] * 5
    waits = [rl.reserve("a", 0.0) for _ in range(5)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])  # queued behind each other
    assert rl.reserve("a", 0.0) is None and rl.refused == 1  # a token 0.6 s away: dropped, nothing taken
    assert rl.reserve("b", 0.0) == 0.0  # other peers have their own bucket
    assert rl.reserve("a", 0.6) == pytest.approx(0.0)  # refilled meanwhile
    assert rl.tokens("a", 100.0) == 5  # never more than the burst


def test_a_flood_gets_the_rate_and_no_more():
    rl = PeerRateLimiter(rate=50.0, burst=200, max_wait=1.0)
    served, now = 0, 0.0
    for i in range(100_000):  # 10,000 requests per second for 10 s
        now = i / 10_000
        wait = rl.reserve("flood", now)
        if wait is not None:
            served += 1
    assert served <= 200 + 50 * (now + 1.0) + 1


def test_buckets_are_bounded():
    rl = PeerRateLimiter(rate=1.0, burst=1, max_peers=100)
    for i in range(1000):
        rl.reserve(i, 0.0)
    assert len(rl) == 100


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        PeerRateLimiter(rate=0, burst=1)
