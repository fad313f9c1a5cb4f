"""An in-memory network in virtual time: ``MemNetwork`` and its ``MemTransport``.

Every peer of a simulation gets a ``MemTransport``, the same ``Transport`` the
protocols use over libp2p; only the bytes move differently. Run it under
``trio.testing.MockClock(autojump_threshold=0)`` and time is virtual: a
simulated hour takes as long as the work done in it.

Theory of operation
-------------------
A frame sent from A to B is stamped with its delivery time and pushed on one
heap ordered by ``(deliver_at, seq)``. One task (``MemNetwork.run``) sleeps
until the head is due (``trio.move_on_at(head)``, whose deadline a push of an
earlier item pulls forward), pops every due item and calls the destination's
``_on_frame`` synchronously; no task per message. Stream events
(``memstream.py``) and delayed disconnect notices ride the same heap.

Delivery time on the directed link A→B (``_link_time``)::

    start   = max(now, busy_until)            # the link sends one frame at a time
    sent    = start + size / bandwidth        # (no bandwidth limit: sent = now)
    deliver = max(sent + latency, last_deliver)   # FIFO, like TCP

``busy_until`` and ``last_deliver`` live per directed link in the sending
transport (``_links``), pruned once idle. Latency is drawn per frame from the
link's distribution; loss is decided at send time; both from the network's
seeded ``random.Random``, never the global one. On a bandwidth-limited link a
sender waits while more than ``link_buffer`` bytes are queued (a full socket
send buffer), so queues stay bounded and congestion drops nothing.

Reachability. Sending to a peer not yet connected dials it: if it is up and on
our side of any partition both transports add each other to their connected
set at once (connection set-up costs no virtual time) and call
``_peer_connected``; otherwise the dial fails with ``PeerUnreachable`` after
``dial_timeout`` (silent crash, partition) or one round trip (a stopped peer
or a non-silent crash: the host answers with a reset). On an open connection
frames to or from a crashed peer, across a partition, or lost are dropped and
counted (``stats``). A partition keeps connections open (TCP would stall);
a silent crash leaves its peers believing they are connected, so their
requests time out; a non-silent crash or a clean stop (the transport's
``run`` ends) gives each connected peer ``_peer_lost`` one latency later, which
fails its pending requests with ``PeerDisconnected``.

Determinism. Given the same seed, the same sequence of sends draws the same
random numbers. The order of sends depends on trio's scheduler, which
shuffles its run queue with a module-level random generator:
``deterministic_trio(seed)`` seeds it. Nothing here iterates a set.

Use::

    async def main():
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            a = await net.start_peer(nursery, Identity.from_seed(bytes(32)))
            ...

    net = MemNetwork(seed, latency=(0.02, 0.12), loss=0.01)
    with deterministic_trio(seed):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

Cost: each distinct delivery time is one wake-up of the delivery task, and
trio's per-wake-up overhead dominates; ``quantum=0.01`` (with the protocol
timers quantised the same way) makes large simulations several times faster.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from ..errors import PeerUnreachable, TransportError
from ..node.identity import Identity, PeerId
from ..node.transport import Transport
from . import memstream
from .memstream import MemStream

log = logging.getLogger(__name__)

Latency = tuple[float, float] | Callable[[random.Random], float]
Tracer = Callable[[float, str, PeerId, PeerId, int], None]
_UNSET: Any = object()


@dataclass(frozen=True)
class LinkParams:
    """What one directed link does: latency sampler, loss probability, bytes/s (None: unlimited)."""

    sample: Callable[[random.Random], float]
    loss: float
    bandwidth: float | None


def _sampler(latency: Latency) -> Callable[[random.Random], float]:
    if callable(latency):
        return lambda rng: max(0.0, float(latency(rng)))
    lo, hi = (float(x) for x in latency)
    if not 0 <= lo <= hi:
        raise ValueError(f"latency range must be 0 <= low <= high, got {latency!r}")
    span = hi - lo
    return lambda rng: lo + span * rng.random()


def _link_params(latency: Latency, loss: float, bandwidth: float | None) -> LinkParams:
    if not 0.0 <= loss <= 1.0:
        raise ValueError(f"loss must be a probability, got {loss!r}")
    if bandwidth is not None and bandwidth <= 0:
        raise ValueError(f"bandwidth must be positive bytes/s or None, got {bandwidth!r}")
    return LinkParams(_sampler(latency), float(loss), None if bandwidth is None else float(bandwidth))


@dataclass
class NetStats:
    """Counters over the whole network. Drop reasons: loss, partition, crash (an end down)."""

    delivered_frames: int = 0
    delivered_bytes: int = 0
    dropped_frames: Counter = field(default_factory=Counter)
    dropped_bytes: Counter = field(default_factory=Counter)
    stream_bytes: int = 0  # stream data delivered
    stream_resets: Counter = field(default_factory=Counter)  # by reason


@contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Make trio's scheduling repeatable for ``seed`` inside the block; restore it after.

    trio shuffles each batch of runnable tasks with a module-level
    ``random.Random`` (``trio._core._run._r``); with
    ``_ALLOW_DETERMINISTIC_SCHEDULING`` it first sorts the batch by task
    creation order, so the shuffle depends only on that generator's state.
    pytest-trio switches that flag on for hypothesis; we do the same and seed
    the generator. Wrap the whole ``trio.run`` (or the part of a test to
    replay) in it, together with a ``MockClock`` and a ``MemNetwork`` of the
    same seed. These are trio internals: checked here so a trio upgrade that
    moves them fails loudly instead of silently losing determinism.
    """
    run_mod = trio._core._run
    if not hasattr(run_mod, "_r") or not hasattr(run_mod, "_ALLOW_DETERMINISTIC_SCHEDULING"):
        raise RuntimeError("this trio version has no seedable scheduler; deterministic replay is unavailable")
    old_flag = run_mod._ALLOW_DETERMINISTIC_SCHEDULING
    old_state = run_mod._r.getstate()
    run_mod._ALLOW_DETERMINISTIC_SCHEDULING = True
    run_mod._r.seed(seed)
    try:
        yield
    finally:
        run_mod._r.setstate(old_state)
        run_mod._ALLOW_DETERMINISTIC_SCHEDULING = old_flag


class MemNetwork:
    """The in-memory network: peers, links, partitions, crashes, and the delivery task.

    ``latency`` is a ``(low, high)`` range in seconds (uniform) or a callable
    ``rng -> seconds``; ``loss`` a probability per frame; ``bandwidth`` bytes/s
    per directed link (None: unlimited). ``quantum`` (seconds, 0: off) rounds
    delivery times up to a grid so that more frames share one wake-up: faster
    large simulations, coarser timing. ``stream_window`` bounds the bytes a
    stream buffers at its receiver; ``link_buffer`` the bytes queued on a
    bandwidth-limited link before senders wait (a socket's send buffer).
    """

    def __init__(
        self,
        seed: int,
        *,
        latency: Latency = (0.02, 0.12),
        loss: float = 0.0,
        bandwidth: float | None = None,
        dial_timeout: float = 1.0,
        stream_window: int = 256 * 1024,
        link_buffer: int = 1 << 20,
        quantum: float = 0.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.default_link = _link_params(latency, loss, bandwidth)
        self.dial_timeout = dial_timeout
        self.stream_window = stream_window
        self.link_buffer = link_buffer
        self.quantum = quantum
        self.stats = NetStats()
        self.tracer: Tracer | None = None  # tracer(now, event, src, dst, size) for every frame
        self._overrides: dict[tuple[PeerId, PeerId], LinkParams] = {}
        self._known: dict[PeerId, MemTransport] = {}  # current transport of every added peer
        self._live: dict[PeerId, MemTransport] = {}  # running and not crashed
        self._crashed: dict[PeerId, bool] = {}  # peer -> silent
        self._kwargs: dict[PeerId, dict[str, Any]] = {}
        self._group: dict[PeerId, int] | None = None
        self._heap: list[tuple] = []
        self._seq = itertools.count()
        self._stream_ids = itertools.count(1)
        self._wake: trio.CancelScope | None = None
        self._running = False

    # --- set-up and faults -------------------------------------------------------

    def add_peer(self, identity: Identity, **transport_kwargs: Any) -> MemTransport:
        """A transport for ``identity`` on this network; start its ``run`` to bring it up."""
        peer = identity.peer_id
        if peer in self._known:
            raise ValueError(f"{peer.short} is already on this network; use restart()")
        self._kwargs[peer] = transport_kwargs
        transport = self._known[peer] = MemTransport(self, identity, **transport_kwargs)
        return transport

    async def start_peer(self, nursery: trio.Nursery, identity: Identity, **transport_kwargs: Any) -> MemTransport:
        """``add_peer`` and run the transport in ``nursery``."""
        transport = self.add_peer(identity, **transport_kwargs)
        await nursery.start(transport.run)
        return transport

    def transport(self, peer: PeerId) -> MemTransport:
        return self._known[peer]

    def set_link(
        self,
        a: PeerId,
        b: PeerId,
        *,
        latency: Latency = _UNSET,
        loss: float = _UNSET,
        bandwidth: float | None = _UNSET,
        both_ways: bool = True,
    ) -> None:
        """Override the link a→b (and b→a); what is not given keeps the network default."""
        d = self.default_link
        checked = _link_params(
            (0.0, 0.0),
            d.loss if loss is _UNSET else loss,
            d.bandwidth if bandwidth is _UNSET else bandwidth,
        )
        params = LinkParams(d.sample if latency is _UNSET else _sampler(latency), checked.loss, checked.bandwidth)
        self._overrides[(a, b)] = params
        if both_ways:
            self._overrides[(b, a)] = params

    def partition(self, *groups: Iterable[PeerId]) -> None:
        """Drop frames between peers of different groups; unlisted peers form one more group."""
        group: dict[PeerId, int] = {}
        for index, members in enumerate(groups):
            for peer in members:
                if peer in group:
                    raise ValueError(f"{peer.short} is in two partition groups")
                group[peer] = index
        self._group = group

    def heal(self) -> None:
        self._group = None

    def crash(self, peer: PeerId, silent: bool = True) -> None:
        """Make ``peer`` deaf and mute. ``silent=False``: its peers see the connection reset."""
        transport = self._known[peer]
        self._crashed[peer] = silent
        if self._live.get(peer) is transport:
            del self._live[peer]
        self._disconnect(transport, notify=not silent, reason="crash")

    def restart(self, peer: PeerId, *, fresh: bool = False) -> MemTransport:
        """Make crashed ``peer`` reachable again; ``fresh``: as a new transport (start its ``run``)."""
        if peer not in self._crashed:
            raise ValueError(f"{peer.short} has not crashed; only a crashed peer restarts")
        transport = self._known[peer]
        del self._crashed[peer]
        if fresh:
            transport = self._known[peer] = MemTransport(self, transport.identity, **self._kwargs[peer])
        elif transport.running:
            self._live[peer] = transport
        return transport

    def is_up(self, peer: PeerId) -> bool:
        return peer in self._live

    # --- the delivery task ---------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver due items until cancelled. Exactly one per network."""
        if self._running:
            raise RuntimeError("this MemNetwork is already running")
        self._running = True
        heap = self._heap
        pop = heapq.heappop
        task_status.started()
        try:
            while True:
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    _, _, fn, a, b, c = pop(heap)
                    try:
                        fn(a, b, c)
                    except Exception:
                        log.exception("memnet delivery failed")
                with trio.move_on_at(heap[0][0] if heap else math.inf) as scope:
                    self._wake = scope
                    await trio.sleep_forever()
                self._wake = None
        finally:
            self._wake = None
            self._running = False

    def _push(self, at: float, fn: Callable, a: Any, b: Any, c: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), fn, a, b, c))
        wake = self._wake
        if wake is not None and at < wake.deadline:
            wake.deadline = at

    # --- frames ----------------------------------------------------------------

    def _params(self, src: PeerId, dst: PeerId) -> LinkParams:
        if self._overrides:
            return self._overrides.get((src, dst), self.default_link)
        return self.default_link

    def _link_time(self, src: MemTransport, dst: PeerId, params: LinkParams, size: int, now: float) -> float:
        links = src._links
        state = links.get(dst)
        if state is None:
            if len(links) >= src._links_limit:
                src._prune_links(now)
                links = src._links
            state = links[dst] = [now, now]
        bandwidth = params.bandwidth
        if bandwidth is not None:
            start = state[0] if state[0] > now else now
            sent = state[0] = start + size / bandwidth
        else:
            sent = now
        at = sent + params.sample(self.rng)
        if self.quantum:
            at = math.ceil(at / self.quantum) * self.quantum
        if at < state[1]:
            at = state[1]
        state[1] = at
        return at

    def _transmit(self, src: MemTransport, dst: PeerId, frame: bytes) -> float | None:
        """Put ``frame`` on the link src→dst (``src`` is connected to ``dst``).

        Returns when the sender may go on if the link's queue is now over
        ``link_buffer`` bytes (a full socket send buffer), else None.
        """
        src_id = src.local_id
        size = len(frame)
        if self._live.get(src_id) is not src or dst not in self._live:
            self._drop("crash", src_id, dst, size)
            return None
        group = self._group
        if group is not None and group.get(src_id) != group.get(dst):
            self._drop("partition", src_id, dst, size)
            return None
        params = self._params(src_id, dst)
        now = trio.current_time()
        at = self._link_time(src, dst, params, size, now)
        if params.loss and self.rng.random() < params.loss:
            self._drop("loss", src_id, dst, size)
        else:
            self._push(at, self._deliver_frame, src, dst, frame)
        bandwidth = params.bandwidth
        if bandwidth is not None:
            clear_at = src._links[dst][0] - self.link_buffer / bandwidth
            if clear_at > now:
                return clear_at
        return None

    def _deliver_frame(self, src: MemTransport, dst_id: PeerId, frame: bytes) -> None:
        src_id = src.local_id
        dst = self._live.get(dst_id)
        if dst is None or self._live.get(src_id) is not src:
            self._drop("crash", src_id, dst_id, len(frame))
            return
        group = self._group
        if group is not None and group.get(src_id) != group.get(dst_id):
            self._drop("partition", src_id, dst_id, len(frame))
            return
        stats = self.stats
        stats.delivered_frames += 1
        stats.delivered_bytes += len(frame)
        if self.tracer is not None:
            self.tracer(trio.current_time(), "deliver", src_id, dst_id, len(frame))
        if src_id not in dst._connected:
            dst._connected[src_id] = None
            dst._peer_connected(src_id)
        dst._on_frame(src_id, frame)

    def _drop(self, reason: str, src: PeerId, dst: PeerId, size: int) -> None:
        stats = self.stats
        stats.dropped_frames[reason] += 1
        stats.dropped_bytes[reason] += size
        if self.tracer is not None:
            self.tracer(trio.current_time(), "drop:" + reason, src, dst, size)

    # --- connections --------------------------------------------------------------

    def _dial(self, src: MemTransport, dst: PeerId) -> float | None:
        """Connect src to dst now; or return how long the failed dial takes."""
        if dst == src.local_id:
            raise PeerUnreachable("a peer cannot dial itself")
        if dst not in self._known:
            raise PeerUnreachable(f"{dst.short} is not on this network")
        target = self._live.get(dst)
        group = self._group
        if target is None or self._live.get(src.local_id) is not src or (
            group is not None and group.get(src.local_id) != group.get(dst)
        ):
            if target is None and not self._crashed.get(dst, False):
                # stopped, or crashed loudly: its host answers with a reset
                return self._params(src.local_id, dst).sample(self.rng) * 2
            return self.dial_timeout
        src._connected[dst] = None
        src._peer_connected(dst)
        if src.local_id not in target._connected:
            target._connected[src.local_id] = None
            target._peer_connected(src.local_id)
        return None

    def _disconnect(self, transport: MemTransport, *, notify: bool, reason: str) -> None:
        """Drop all of ``transport``'s connections and streams (it crashed or stopped)."""
        me = transport.local_id
        now = trio.current_time()
        for end in list(transport._streams.values()):
            end._fail(TransportError(f"stream {end.protocol} reset: {me.short} {reason}"))
            self.stats.stream_resets[reason] += 1
            if notify and end._other is not None:
                at = now + self._params(me, end.peer).sample(self.rng)
                self._push(at, self._deliver_reset, end._other, reason, None)
        for peer in list(transport._connected):
            if notify:
                at = now + self._params(me, peer).sample(self.rng)
                self._push(at, self._deliver_lost, peer, transport, None)
        transport._connected.clear()

    def _deliver_lost(self, peer: PeerId, lost: MemTransport, _: Any) -> None:
        target = self._live.get(peer)
        lost_id = lost.local_id
        if target is None or lost_id not in target._connected or self._live.get(lost_id) is lost:
            return
        del target._connected[lost_id]
        target._peer_lost(lost_id)

    def _deliver_reset(self, end: MemStream, reason: str, _: Any) -> None:
        if self._live.get(end._owner.local_id) is end._owner:
            end._fail(TransportError(f"stream {end.protocol} reset: {end.peer.short} {reason}"))

    def _attach(self, transport: MemTransport) -> None:
        peer = transport.local_id
        if self._known.get(peer) is transport and peer not in self._crashed:
            self._live[peer] = transport

    def _detach(self, transport: MemTransport) -> None:
        peer = transport.local_id
        if self._live.get(peer) is transport:
            del self._live[peer]
            self._disconnect(transport, notify=True, reason="stopped")

    # --- streams ------------------------------------------------------------------

    def _stream_event(self, sender: MemStream, kind: int, payload: Any) -> None:
        """Carry one stream event from ``sender`` to its other end over their link."""
        src = sender._owner
        if self._live.get(src.local_id) is not src:
            return  # a dead end says nothing
        size = len(payload) if kind == memstream.DATA else 0
        params = self._params(src.local_id, sender.peer)
        at = self._link_time(src, sender.peer, params, size, trio.current_time())
        self._push(at, self._deliver_stream, sender._other, kind, payload)

    def _deliver_stream(self, end: MemStream, kind: int, payload: Any) -> None:
        owner, other = end._owner, end._other
        if self._live.get(owner.local_id) is not owner or self._live.get(other._owner.local_id) is not other._owner:
            return
        group = self._group
        if group is not None and group.get(owner.local_id) != group.get(end.peer):
            for side in (end, other):
                side._fail(TransportError(f"stream {end.protocol} reset: partition"))
            self.stats.stream_resets["partition"] += 1
            return
        if kind == memstream.OPEN:
            if end.peer not in owner._connected:
                owner._connected[end.peer] = None
                owner._peer_connected(end.peer)
            memstream.accept_stream(self, end)
            return
        if kind == memstream.DATA:
            self.stats.stream_bytes += len(payload)
        end._on_event(kind, payload)


class MemTransport(Transport):
    """A ``Transport`` whose frames travel on a ``MemNetwork``. Its address is the peer ID."""

    def __init__(self, network: MemNetwork, identity: Identity, *, max_streams: int = 256, **kwargs: Any) -> None:
        super().__init__(identity, **kwargs)
        self.network = network
        self.max_streams = max_streams
        self.running = False
        self._connected: dict[PeerId, None] = {}
        self._links: dict[PeerId, list[float]] = {}  # dst -> [busy_until, last_deliver]
        self._links_limit = 64
        self._streams: dict[int, MemStream] = {}

    async def _serve(self, nursery: trio.Nursery, task_status: Any) -> None:
        self.running = True
        self.network._attach(self)
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.running = False
            self.network._detach(self)

    async def _send_frame(self, peer: PeerId, frame: bytes) -> None:
        # A cancellation point, but it yields only when the link's buffer is
        # full: a yield per frame cost a third of the simulation's speed.
        await trio.lowlevel.checkpoint_if_cancelled()
        if peer not in self._connected:
            await self._ensure_connected(peer)
        wait_until = self.network._transmit(self, peer, frame)
        if wait_until is not None:
            await trio.sleep_until(wait_until)

    async def _ensure_connected(self, peer: PeerId) -> None:
        if peer in self._connected:
            return
        delay = self.network._dial(self, peer)
        if delay is not None:
            await trio.sleep(delay)
            raise PeerUnreachable(f"{peer.short} did not answer a dial from {self.local_id.short}")

    async def open_stream(self, peer: PeerId, protocol: str) -> MemStream:
        return await memstream.open_stream(self.network, self, peer, protocol)

    def connected_peers(self) -> list[PeerId]:
        return list(self._connected)

    async def connect(self, address: str) -> PeerId:
        """Dial a peer by its ID (``12D3KooW...``, optionally as ``.../p2p/12D3KooW...``)."""
        try:
            peer = PeerId.from_string(address.rsplit("/", 1)[-1])
        except ValueError as exc:
            raise PeerUnreachable(f"cannot dial {address!r}: {exc}") from None
        await trio.lowlevel.checkpoint_if_cancelled()
        await self._ensure_connected(peer)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return peer

    def listen_addresses(self) -> list[str]:
        return [self.local_id.text]

    def _prune_links(self, now: float) -> None:
        """Forget link state that no longer matters (nothing queued or in flight)."""
        self._links = {p: s for p, s in self._links.items() if s[0] > now or s[1] > now}
        self._links_limit = max(64, 2 * len(self._links))
