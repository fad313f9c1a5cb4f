"""memnet: latency, loss, bandwidth, partitions, crashes, streams, and exact replay for a seed.

Everything runs in virtual time (MockClock with autojump), so the timings
asserted here are exact consequences of the configuration, not wall-clock luck.
"""

from __future__ import annotations

import math
import random
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.errors import PeerDisconnected, PeerUnreachable, RequestTimeout, TransportError
from p2pcompute.node.identity import Identity, PeerId
from p2pcompute.node.messages import Ping, Pong
from p2pcompute.simulations.memnet import MemNetwork, deterministic_trio


def ident(i: int) -> Identity:
    return Identity.from_seed(i.to_bytes(32, "big"))


async def pong(peer: PeerId, msg: Ping) -> Pong:
    return Pong(msg.nonce, msg.payload[:16])


@asynccontextmanager
async def network(n: int, seed: int = 1, transport_kwargs: dict | None = None, **net_kwargs):
    net = MemNetwork(seed, **net_kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        peers = [await net.start_peer(nursery, ident(i), **(transport_kwargs or {})) for i in range(n)]
        for p in peers:
            p.on_request(Ping, pong)
        yield net, peers, nursery
        nursery.cancel_scope.cancel()


# --- requests, latency, connections ------------------------------------------------


async def test_request_reply_rtt_within_twice_the_latency_range(autojump_clock):
    async with network(2, latency=(0.02, 0.12)) as (net, (a, b), _):
        rtts = []
        for k in range(300):
            start = trio.current_time()
            reply = await a.request(b.local_id, Ping(k, b"hi"))
            rtts.append(trio.current_time() - start)
            assert reply == Pong(k, b"hi")
        assert all(0.04 <= r <= 0.24 for r in rtts)
        # the samples cover the range rather than sitting at one value
        assert min(rtts) < 0.07 and max(rtts) > 0.21
        assert abs(sum(rtts) / len(rtts) - 0.14) < 0.01
        assert net.stats.delivered_frames == 600


async def test_sending_connects_both_sides_and_unknown_peers_are_unreachable(autojump_clock):
    async with network(3) as (net, (a, b, c), _):
        events = []
        a.on_peer_event(lambda p, up: events.append(("a", p, up)))
        b.on_peer_event(lambda p, up: events.append(("b", p, up)))
        await a.send(b.local_id, Ping(1))
        assert a.connected_peers() == [b.local_id]
        assert b.connected_peers() == [a.local_id]
        assert events == [("a", b.local_id, True), ("b", a.local_id, True)]
        assert await c.connect(a.local_id.text) == a.local_id
        assert c.local_id in a.connected_peers()
        with pytest.raises(PeerUnreachable):
            await a.request(ident(99).peer_id, Ping(1))
        with pytest.raises(PeerUnreachable):
            await a.connect("not-a-peer-id")
        with pytest.raises(PeerUnreachable):
            await a.connect(a.local_id.text)


async def test_frames_on_one_link_arrive_in_order_whatever_their_latency(autojump_clock):
    async with network(2, latency=lambda rng: rng.uniform(0.001, 0.3)) as (net, (a, b), _):
        arrivals: list[tuple[float, int]] = []

        async def record(peer, msg):
            arrivals.append((trio.current_time(), msg.nonce))

        b.on_message(Ping, record)
        for k in range(200):
            await a.send(b.local_id, Ping(k))
        await trio.sleep(1)
        assert sorted(n for _, n in arrivals) == list(range(200))
        by_nonce = [t for t, _ in sorted(arrivals, key=lambda x: x[1])]
        assert by_nonce == sorted(by_nonce)


# --- loss, partitions, bandwidth ---------------------------------------------------


async def test_observed_loss_rate_matches_the_configured_one(autojump_clock):
    n, p = 4000, 0.1
    async with network(2, seed=7, loss=p) as (net, (a, b), _):
        received = 0

        async def count(peer, msg):
            nonlocal received
            received += 1

        b.on_message(Ping, count)
        for k in range(n):
            await a.send(b.local_id, Ping(k))
            if k % 50 == 49:
                await trio.sleep(0.05)
        await trio.sleep(1)
        lost = n - received
        assert b.stats.busy_drops == 0
        assert net.stats.dropped_frames["loss"] == lost
        assert net.stats.delivered_frames == received
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(lost - n * p) < 4 * sigma


async def test_partition_drops_cross_group_frames_and_heal_restores(autojump_clock):
    async with network(4) as (net, (a, b, c, d), _):
        for x in (b, c):
            await a.request(x.local_id, Ping(0))
        net.partition([a.local_id, b.local_id], [c.local_id, d.local_id])
        assert await a.request(b.local_id, Ping(1)) == Pong(1)
        assert await c.request(d.local_id, Ping(2)) == Pong(2)
        with pytest.raises(RequestTimeout):
            await a.request(c.local_id, Ping(3), timeout=1)
        with pytest.raises(RequestTimeout):
            await c.request(a.local_id, Ping(4), timeout=1)
        assert net.stats.dropped_frames["partition"] == 2
        # a never talked to d: the dial itself fails, after the dial timeout
        start = trio.current_time()
        with pytest.raises(PeerUnreachable):
            await a.request(d.local_id, Ping(5), timeout=5)
        assert trio.current_time() - start == pytest.approx(net.dial_timeout)
        net.heal()
        assert await a.request(c.local_id, Ping(6)) == Pong(6)
        assert await a.request(d.local_id, Ping(7)) == Pong(7)


async def test_bandwidth_serialises_and_delays_large_frames(autojump_clock):
    bw, lat = 100_000.0, 0.05
    async with network(2, latency=(lat, lat), bandwidth=bw) as (net, (a, b), _):
        start = trio.current_time()
        await a.request(b.local_id, Ping(1, bytes(50_000)))
        rtt = trio.current_time() - start
        assert rtt == pytest.approx(2 * lat + (a.stats.bytes_sent + b.stats.bytes_sent) / bw)
        assert rtt > 0.5

        arrivals = []

        async def record(peer, msg):
            arrivals.append(trio.current_time())

        b.on_message(Ping, record)
        sent_before = a.stats.bytes_sent
        start = trio.current_time()
        await a.send(b.local_id, Ping(2, bytes(20_000)))
        size = a.stats.bytes_sent - sent_before
        await a.send(b.local_id, Ping(3, bytes(20_000)))
        await trio.sleep(2)
        assert [t - start for t in arrivals] == pytest.approx([size / bw + lat, 2 * size / bw + lat])


async def test_a_sender_waits_while_its_link_buffer_is_full(autojump_clock):
    bw = 10_000.0
    async with network(2, latency=(0.01, 0.01), bandwidth=bw, link_buffer=20_000) as (net, (a, b), _):
        start = trio.current_time()
        for k in range(10):
            await a.send(b.local_id, Ping(k, bytes(5_000)))
        total = a.stats.bytes_sent
        # everything beyond the buffer had to leave the link before the last send returned
        assert trio.current_time() - start == pytest.approx((total - 20_000) / bw)
        await trio.sleep(3)
        assert net.stats.delivered_frames == 10


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    low=st.floats(0.0, 0.2),
    spread=st.floats(0.0, 0.2),
    bandwidth=st.none() | st.floats(1e3, 1e7),
    sends=st.lists(st.tuples(st.integers(0, 20_000), st.floats(0.0, 0.05)), min_size=1, max_size=25),
)
def test_link_timing_is_fifo_and_within_latency_and_bandwidth_bounds(seed, low, spread, bandwidth, sends):
    high = low + spread
    log: list[tuple[int, float, float, int]] = []  # nonce, sent at, arrived at, frame size

    async def main():
        async with network(2, seed, latency=(low, high), bandwidth=bandwidth) as (net, (a, b), _):
            arrived: dict[int, float] = {}

            async def record(peer, msg):
                arrived[msg.nonce] = trio.current_time()

            b.on_message(Ping, record)
            for k, (size, gap) in enumerate(sends):
                before = a.stats.bytes_sent
                sent_at = trio.current_time()
                await a.send(b.local_id, Ping(k, bytes(size)))
                log.append((k, sent_at, 0.0, a.stats.bytes_sent - before))
                await trio.sleep(gap)
            queued_tx = sum(size for _, _, _, size in log) / bandwidth if bandwidth else 0.0
            await trio.sleep(high + queued_tx + 1)  # everything queued on the link has arrived
            for i, (k, sent_at, _, size) in enumerate(log):
                log[i] = (k, sent_at, arrived[k], size)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    arrivals = [arr for _, _, arr, _ in log]
    assert arrivals == sorted(arrivals)  # FIFO on the link
    queued = 0.0
    latest = 0.0
    for _, sent_at, arr, size in log:
        tx = size / bandwidth if bandwidth else 0.0
        assert arr >= sent_at + low + tx - 1e-9
        queued += tx
        latest = max(latest, sent_at + high)
        assert arr <= latest + queued + 1e-9


async def test_set_link_overrides_one_link_only(autojump_clock):
    async with network(3, latency=(0.01, 0.01)) as (net, (a, b, c), _):
        net.set_link(a.local_id, b.local_id, latency=(0.5, 0.5))
        net.set_link(a.local_id, c.local_id, loss=1.0, both_ways=False)
        start = trio.current_time()
        await a.request(b.local_id, Ping(1))
        assert trio.current_time() - start == pytest.approx(1.0)
        start = trio.current_time()
        await b.request(c.local_id, Ping(2))
        assert trio.current_time() - start == pytest.approx(0.02)
        with pytest.raises(RequestTimeout):
            await a.request(c.local_id, Ping(3), timeout=1)
        assert net.stats.dropped_frames["loss"] == 1


# --- crash and restart ---------------------------------------------------------------


async def test_silent_crash_makes_requests_time_out(autojump_clock):
    async with network(2) as (net, (a, b), _):
        await a.request(b.local_id, Ping(0))
        net.crash(b.local_id)
        start = trio.current_time()
        with pytest.raises(RequestTimeout):
            await a.request(b.local_id, Ping(1), timeout=2)
        assert trio.current_time() - start == pytest.approx(2)
        assert net.stats.dropped_frames["crash"] == 1
        # b is deaf and mute, and a still believes it is connected
        assert b.local_id in a.connected_peers()
        with pytest.raises(RequestTimeout):
            await b.request(a.local_id, Ping(2), timeout=1)


async def test_loud_crash_fails_pending_requests_and_restart_brings_the_peer_back(autojump_clock):
    async with network(2, latency=(0.02, 0.12)) as (net, (a, b), nursery):
        lost = []
        a.on_peer_event(lambda p, up: lost.append(p) if not up else None)
        await a.request(b.local_id, Ping(0))

        async def crash_soon():
            await trio.sleep(0.01)
            net.crash(b.local_id, silent=False)

        nursery.start_soon(crash_soon)
        start = trio.current_time()
        with pytest.raises(PeerDisconnected):
            await a.request(b.local_id, Ping(1), timeout=5)
        assert trio.current_time() - start <= 0.01 + 0.12
        assert lost == [b.local_id]
        assert a.connected_peers() == []
        # a stopped host answers dials with a reset: one round trip, not the dial timeout
        start = trio.current_time()
        with pytest.raises(PeerUnreachable):
            await a.request(b.local_id, Ping(2), timeout=5)
        assert trio.current_time() - start <= 0.24

        with pytest.raises(ValueError):
            net.restart(a.local_id)
        fresh = net.restart(b.local_id, fresh=True)
        assert fresh is not b and fresh.local_id == b.local_id
        fresh.on_request(Ping, pong)
        await nursery.start(fresh.run)
        assert await a.request(b.local_id, Ping(3)) == Pong(3)
        assert fresh.connected_peers() == [a.local_id]


async def test_a_stopped_transport_disconnects_its_peers(autojump_clock):
    async with network(1) as (net, (a,), nursery):
        lost = []
        a.on_peer_event(lambda p, up: lost.append(p) if not up else None)
        b = net.add_peer(ident(5))
        b.on_request(Ping, pong)
        scope = trio.CancelScope()

        async def run_b(task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await b.run(task_status=task_status)

        await nursery.start(run_b)
        assert await a.request(b.local_id, Ping(1)) == Pong(1)
        scope.cancel()
        await trio.sleep(0.2)
        assert lost == [b.local_id]
        assert not net.is_up(b.local_id)
        with pytest.raises(PeerUnreachable):
            await a.request(b.local_id, Ping(2))


# --- streams ------------------------------------------------------------------------


async def echo(peer, stream):
    while True:
        data = await stream.read(50_000)
        if not data:
            break
        await stream.write(data)
    await stream.close()


async def test_stream_moves_one_mib_intact_and_in_order(autojump_clock):
    payload = random.Random(3).randbytes(1 << 20)
    async with network(2, bandwidth=4_000_000, stream_window=64 * 1024) as (net, (a, b), _):
        b.on_stream("/echo/1", echo)
        stream = await a.open_stream(b.local_id, "/echo/1")
        received = bytearray()
        start = trio.current_time()

        async def writer():
            rng = random.Random(4)
            pos = 0
            while pos < len(payload):
                n = rng.randint(1, 100_000)
                await stream.write(payload[pos : pos + n])
                pos += n
            await stream.close()

        async with trio.open_nursery() as inner:
            inner.start_soon(writer)
            while chunk := await stream.read():
                received += chunk
        assert bytes(received) == payload
        assert trio.current_time() - start >= len(payload) / 4_000_000
        assert net.stats.stream_bytes == 2 * len(payload)
        await trio.sleep(1)
        assert a._streams == {} and b._streams == {}


async def test_stream_writer_waits_while_the_receiver_buffer_is_full(autojump_clock):
    window = 64 * 1024
    async with network(2, stream_window=window) as (net, (a, b), _):
        got = bytearray()

        async def slow_reader(peer, stream):
            await trio.sleep(5)
            while chunk := await stream.read():
                got.extend(chunk)

        b.on_stream("/slow/1", slow_reader)
        stream = await a.open_stream(b.local_id, "/slow/1")
        with trio.move_on_after(4) as waited:
            await stream.write(bytes(1 << 20))
        assert waited.cancelled_caught
        assert net.stats.stream_bytes == window
        # a cancelled write is partial; what was written still arrives, then EOF
        await stream.close()
        await trio.sleep(10)
        assert len(got) == window


async def test_stream_open_refused_and_unanswered(autojump_clock):
    async with network(2, transport_kwargs={"default_timeout": 2.0}) as (net, (a, b), _):
        with pytest.raises(TransportError) as refused:
            await a.open_stream(b.local_id, "/nobody/1")
        assert not isinstance(refused.value, PeerUnreachable)
        await a.request(b.local_id, Ping(0))
        net.crash(b.local_id)
        start = trio.current_time()
        with pytest.raises(PeerUnreachable):
            await a.open_stream(b.local_id, "/echo/1")
        assert trio.current_time() - start == pytest.approx(2.0)


async def test_crash_resets_streams(autojump_clock):
    async with network(3) as (net, (a, b, c), _):
        outcome = {}

        async def hold(peer, stream):
            try:
                await stream.read()
            except TransportError as exc:
                outcome[peer] = exc

        b.on_stream("/hold/1", hold)
        s_ab = await a.open_stream(b.local_id, "/hold/1")
        s_cb = await c.open_stream(b.local_id, "/hold/1")
        # silent crash of b: b's own pending reads reset at once; a hears nothing
        net.crash(b.local_id)
        await trio.sleep(0.001)
        assert set(outcome) == {a.local_id, c.local_id}
        with trio.move_on_after(2) as waited:
            await s_ab.read()
        assert waited.cancelled_caught

        # a loud crash resets the other side one latency later
        net.restart(b.local_id)
        outcome.clear()
        s_ab = await a.open_stream(b.local_id, "/hold/1")
        net.crash(b.local_id, silent=False)
        start = trio.current_time()
        with pytest.raises(TransportError):
            await s_ab.read()
        assert trio.current_time() - start <= 0.12
        # c's end of the stream b dropped silently is half-open: writes vanish, as with TCP
        await s_cb.write(b"x")
        assert net.stats.stream_resets["crash"] == 3


async def test_partition_resets_a_stream_that_crosses_it(autojump_clock):
    async with network(2) as (net, (a, b), _):
        b.on_stream("/echo/1", echo)
        stream = await a.open_stream(b.local_id, "/echo/1")
        await stream.write(b"before")
        assert await stream.read() == b"before"
        net.partition([a.local_id], [b.local_id])
        await stream.write(b"after")
        with pytest.raises(TransportError):
            await stream.read()
        assert net.stats.stream_resets["partition"] == 1


# --- determinism -----------------------------------------------------------------------


def run_scenario(seed: int) -> list[tuple]:
    """Six peers, random requests with loss, a crash and a partition; the trace of what happened."""
    trace: list[tuple] = []

    async def main():
        net = MemNetwork(seed, loss=0.05)
        net.tracer = lambda t, ev, s, d, n: trace.append((t, ev, s.short, d.short, n))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            peers = [await net.start_peer(nursery, ident(i)) for i in range(6)]
            for p in peers:
                p.on_request(Ping, pong)
            rng = random.Random(seed)

            async def client(me, r: random.Random):
                for k in range(25):
                    other = r.choice([p for p in peers if p is not me]).local_id
                    try:
                        await me.request(other, Ping(k, r.randbytes(r.randint(0, 64))), timeout=0.5)
                        trace.append((trio.current_time(), "reply", me.local_id.short, other.short, k))
                    except TransportError as exc:
                        trace.append((trio.current_time(), type(exc).__name__, me.local_id.short, other.short, k))
                    await trio.sleep(r.expovariate(20))

            async def faults():
                await trio.sleep(0.5)
                net.crash(peers[2].local_id, silent=False)
                net.partition([p.local_id for p in peers[:3]])
                await trio.sleep(1)
                net.heal()
                net.restart(peers[2].local_id)

            async with trio.open_nursery() as clients:
                clients.start_soon(faults)
                for p in peers:
                    clients.start_soon(client, p, random.Random(rng.random()))
            nursery.cancel_scope.cancel()

    with deterministic_trio(seed):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return trace


def test_a_run_replays_exactly_for_its_seed():
    first, again, other = run_scenario(11), run_scenario(11), run_scenario(12)
    assert len(first) > 300
    kinds = {event for _, event, *_ in first}
    assert {"deliver", "drop:loss", "reply"} <= kinds
    assert first == again
    assert first != other


def test_deterministic_trio_restores_the_scheduler_state():
    run_mod = trio._core._run
    flag, state = run_mod._ALLOW_DETERMINISTIC_SCHEDULING, run_mod._r.getstate()
    with deterministic_trio(5):
        assert run_mod._ALLOW_DETERMINISTIC_SCHEDULING is True
        first = run_mod._r.random()
    with deterministic_trio(5):
        assert run_mod._r.random() == first
    assert run_mod._ALLOW_DETERMINISTIC_SCHEDULING == flag
    assert run_mod._r.getstate() == state


async def test_a_peer_sending_garbage_frames_gets_one_warning_a_minute_and_every_frame_counted(autojump_clock, caplog):
    async with network(2) as (net, (a, b), _):
        with caplog.at_level("DEBUG", logger="p2pcompute.node.transport"):
            for _ in range(100):
                b._on_frame(a.local_id, b"\xff not cbor")
            await trio.sleep(61)
            b._on_frame(a.local_id, b"\xff not cbor")
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "dropped a frame" in r.message]
        assert len(warnings) == 2  # the first, and the first a minute later
        assert sum(b.stats.rejected.values()) == 101
        assert await a.request(b.local_id, Ping(1, b"still")) == Pong(1, b"still")
