"""Bitswap decisions as pure state machines: the ``Engine`` serves, a ``Session`` fetches one DAG.

Nothing here awaits, touches sockets or reads a clock: events and ``now``
come in, commands come out, and ``bitswap_service.py`` runs them.

Theory of operation: the Engine (serving our blocks)
----------------------------------------------------
Each peer has a *ledger*: the wants it sent us that we could not serve yet
(``waiting``, bounded; served later if the block arrives, ``block_added``),
and two FIFO task queues — presences (HAVE / DONT_HAVE) and blocks to send.
A want-have for a block we hold queues HAVE (or the block itself when it is
tiny, as go-bitswap does); a want-block queues the block; a want for a block
we lack queues DONT_HAVE when the peer asked for it (``sendDontHave``) and
waits; a cancel removes the want everywhere; ``full`` replaces the whole
wantlist. ``receive`` returns the peers that now have work; the driver's
sender for that peer calls ``next_batch`` whenever it is idle, which pops
every queued presence and blocks up to ``batch_bytes`` (at least one): one
message per batch. Whether we hold a block, and its size, is the one outside
fact the engine consults, through the injected ``size_of(cid)``.

A peer cannot make the engine hold or do unbounded work. Its queued
replies (presences + blocks) are capped at ``max_queue``, and all peers'
together at ``max_queue_total`` (a reply beyond the total is not queued:
presences are advisory, the asker re-asks). A peer whose own queue
overflows is asking faster than it reads its replies, and a peer the driver
cannot write to within its deadline (``send_failed``) does not read them at
all: either is *dropped* — its ledger forgotten, its wants ignored for
``ban_seconds`` (``banned``) — and the driver resets its streams
(``take_drops``). Every want entry costs a token of a per-peer bucket
(``want_rate`` per second, up to ``want_burst``); ``read_delay`` says how
long the driver waits before reading that peer's next message, so a flood
is pushed back to the flooder through flow control instead of spending our
CPU.

Theory of operation: the Session (fetching one DAG)
---------------------------------------------------
The session walks the DAG from the root: CIDs it discovers wait in a
*frontier* (children go to its front, so the walk is depth-first and the
frontier stays small); at most ``window`` of them are in progress. A CID in
progress is first looked up locally (command ``Need``; the driver answers
with ``resolved(cid, data or None)``), then wanted from the network:

* if some peer said HAVE for it, or some peer already proved useful to this
  session (sent a block or a HAVE), a *want-block* (with sendDontHave) goes
  to the least loaded such peer (at most ``per_peer`` outstanding each): this
  is how the wants are split across providers, faster peers draining theirs
  sooner and so getting more;
* otherwise a *want-have* is broadcast to every candidate peer; a HAVE turns
  into a want-block to that peer, a DONT_HAVE removes the peer for that CID;
  a CID nobody has is re-broadcast every ``rebroadcast`` seconds (to peers
  added since, and to the others again).

Every block the driver hands in was hashed to get its CID, so a block
either is the one wanted or is *unsolicited*: a peer that sends a block
nobody wanted (a corrupted block hashes to some other CID) is dropped from
the session (``peer_misbehaved``) and its outstanding wants go elsewhere. A
peer with wants outstanding that sends nothing for ``stall_timeout`` gets a
strike and its wants move to others (``max_strikes`` strikes: dropped). A
peer that disconnects (``remove_peer``) is dropped the same way, so a
provider that vanishes mid-transfer costs only a re-dispatch when another
exists. When a block arrives, the other peers asked for it get a cancel.
No progress at all for ``idle_timeout`` fails the session.
Everything is bounded: window, per-peer wants, frontier, DAG size.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from ..errors import BadBlock, BadCid
from . import dagpb
from .bitswap_pb import WANT_BLOCK, WANT_HAVE, Message, WantEntry
from .cid import DAG_PB, Cid

Peer = Hashable
MAX_PRIORITY = 2**31 - 1

# =====================================================================================
# Engine
# =====================================================================================


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_peers: int = 1024
    max_wants_per_peer: int = 4096
    batch_bytes: int = 1024 * 1024  # block bytes per message (go-bitswap: up to ~1 MiB too)
    max_presences: int = 4096  # presences per message
    inline_block: int = 1024  # answer a want-have with the block itself when it is this small
    max_queue: int = 16384  # replies (presences + blocks) queued for one peer; more: the peer is dropped
    max_queue_total: int = 1 << 18  # replies queued for all peers together; more are not queued
    want_rate: float = 4096.0  # want entries per second a peer may make us process (token bucket) ...
    want_burst: float = 16384.0  # ... with this burst (one full message)
    send_timeout: float = 20.0  # the driver's deadline for one write to a peer (then ``send_failed``)
    ban_seconds: float = 60.0  # a dropped peer's wants are ignored this long


@dataclass(frozen=True, slots=True)
class Batch:
    """What to send one peer now: the driver reads the blocks and writes one message."""

    blocks: tuple[Cid, ...]
    haves: tuple[Cid, ...]
    dont_haves: tuple[Cid, ...]


@dataclass(slots=True)
class Ledger:
    waiting: dict[Cid, tuple[int, bool]] = field(default_factory=dict)  # cid -> (want type, send dont-have)
    presences: dict[Cid, bool] = field(default_factory=dict)  # cid -> have
    blocks: dict[Cid, int] = field(default_factory=dict)  # cid -> size
    wants_received: int = 0
    blocks_sent: int = 0
    bytes_sent: int = 0
    credit: float = 0.0  # want tokens left (negative: the driver waits before reading more)
    credit_at: float = 0.0


class Engine:
    """Serves the wants of other peers from the blocks ``size_of`` says we hold."""

    def __init__(self, size_of: Callable[[Cid], int | None], config: EngineConfig = EngineConfig()) -> None:
        self.size_of = size_of
        self.config = config
        self.ledgers: dict[Peer, Ledger] = {}
        self._wanted_by: dict[Cid, set[Peer]] = {}  # index of ledger.waiting
        self._queued = 0  # presences + blocks queued over all ledgers
        self._banned: dict[Peer, float] = {}  # peer -> until
        self._drops: list[tuple[Peer, str]] = []
        self.counts = {"peers_dropped": 0, "replies_refused": 0}

    def receive(self, peer: Peer, msg: Message, now: float = 0.0) -> list[Peer]:
        """Apply a peer's wantlist changes; return ``[peer]`` if it now has something to be sent."""
        if not msg.wants and not msg.full:
            return []
        if self.banned(peer, now):
            return []
        ledger = self.ledgers.get(peer)
        if ledger is None:
            if len(self.ledgers) >= self.config.max_peers:
                return []
            ledger = self.ledgers[peer] = Ledger(credit=self.config.want_burst, credit_at=now)
        ledger.credit = min(self.config.want_burst,
                            ledger.credit + (now - ledger.credit_at) * self.config.want_rate) - len(msg.wants)
        ledger.credit_at = now
        if msg.full:
            for cid in list(ledger.waiting):
                self._unwait(peer, ledger, cid)
            self._queued -= len(ledger.presences) + len(ledger.blocks)
            ledger.presences.clear()
            ledger.blocks.clear()
        for entry in msg.wants:
            ledger.wants_received += 1
            if entry.cancel:
                self._cancel(peer, ledger, entry.cid)
            else:
                self._want(peer, ledger, entry)
            if len(ledger.presences) + len(ledger.blocks) > self.config.max_queue:
                self._drop(peer, f"over {self.config.max_queue} replies queued: it asks faster than it reads",
                           now)
                return []
        return [peer] if ledger.presences or ledger.blocks else []

    def read_delay(self, peer: Peer, now: float) -> float:
        """Seconds to wait before reading ``peer``'s next message (its want tokens are spent)."""
        ledger = self.ledgers.get(peer)
        if ledger is None or ledger.credit >= 0:
            return 0.0
        return max(0.0, -ledger.credit / self.config.want_rate - (now - ledger.credit_at))

    def send_failed(self, peer: Peer, now: float, reason: str) -> None:
        """The driver could not write to ``peer`` within ``send_timeout``: it does not read; drop it."""
        self._drop(peer, reason, now)

    def banned(self, peer: Peer, now: float) -> bool:
        until = self._banned.get(peer)
        if until is None:
            return False
        if now < until:
            return True
        del self._banned[peer]
        return False

    def take_drops(self) -> list[tuple[Peer, str]]:
        """The peers dropped since the last call, and why (the driver resets their streams)."""
        drops, self._drops = self._drops, []
        return drops

    def _drop(self, peer: Peer, reason: str, now: float) -> None:
        self.peer_gone(peer)
        for old in [p for p, until in self._banned.items() if until <= now]:
            del self._banned[old]
        if len(self._banned) < self.config.max_peers:
            self._banned[peer] = now + self.config.ban_seconds
        self.counts["peers_dropped"] += 1
        self._drops.append((peer, reason))

    def _queue(self, ledger: Ledger, table: dict, cid: Cid, value: object) -> None:
        """Queue a reply if the total allows (a presence or block already queued is only updated)."""
        if cid in table:
            table[cid] = value
        elif self._queued < self.config.max_queue_total:
            table[cid] = value
            self._queued += 1
        else:
            self.counts["replies_refused"] += 1

    def _unqueue(self, table: dict, cid: Cid) -> None:
        if table.pop(cid, None) is not None:
            self._queued -= 1

    def _want(self, peer: Peer, ledger: Ledger, e: WantEntry) -> None:
        size = self.size_of(e.cid)
        if size is None:
            if e.send_dont_have:
                self._queue(ledger, ledger.presences, e.cid, False)
            self._wait(peer, ledger, e.cid, e.want_type, e.send_dont_have)
            return
        self._unwait(peer, ledger, e.cid)
        if e.want_type == WANT_BLOCK or size <= self.config.inline_block:
            self._unqueue(ledger.presences, e.cid)
            self._queue(ledger, ledger.blocks, e.cid, size)
        elif e.cid not in ledger.blocks:
            self._queue(ledger, ledger.presences, e.cid, True)

    def _wait(self, peer: Peer, ledger: Ledger, cid: Cid, want_type: int, sdh: bool) -> None:
        if cid not in ledger.waiting and len(ledger.waiting) >= self.config.max_wants_per_peer:
            self._unwait(peer, ledger, next(iter(ledger.waiting)))  # forget the oldest
        ledger.waiting[cid] = (want_type, sdh)
        self._wanted_by.setdefault(cid, set()).add(peer)

    def _unwait(self, peer: Peer, ledger: Ledger, cid: Cid) -> None:
        if ledger.waiting.pop(cid, None) is not None:
            peers = self._wanted_by.get(cid)
            if peers is not None:
                peers.discard(peer)
                if not peers:
                    del self._wanted_by[cid]

    def _cancel(self, peer: Peer, ledger: Ledger, cid: Cid) -> None:
        self._unwait(peer, ledger, cid)
        self._unqueue(ledger.presences, cid)
        self._unqueue(ledger.blocks, cid)

    def block_added(self, cid: Cid) -> list[Peer]:
        """We now hold ``cid``: queue it for the peers that were waiting; return them."""
        peers = self._wanted_by.pop(cid, set())
        size = self.size_of(cid) if peers else None
        if size is None:
            return []
        for peer in peers:
            ledger = self.ledgers[peer]
            want_type, _ = ledger.waiting.pop(cid)
            self._unqueue(ledger.presences, cid)
            if want_type == WANT_BLOCK or size <= self.config.inline_block:
                self._queue(ledger, ledger.blocks, cid, size)
            else:
                self._queue(ledger, ledger.presences, cid, True)
        return sorted(peers, key=repr)

    def next_batch(self, peer: Peer) -> Batch | None:
        """Pop what to send ``peer`` next (presences first, then blocks up to the byte budget)."""
        ledger = self.ledgers.get(peer)
        if ledger is None or not (ledger.presences or ledger.blocks):
            return None
        haves: list[Cid] = []
        dont: list[Cid] = []
        while ledger.presences and len(haves) + len(dont) < self.config.max_presences:
            cid, have = next(iter(ledger.presences.items()))
            del ledger.presences[cid]
            self._queued -= 1
            (haves if have else dont).append(cid)
        blocks: list[Cid] = []
        budget = self.config.batch_bytes
        while ledger.blocks:
            cid, size = next(iter(ledger.blocks.items()))
            if blocks and size > budget:
                break
            del ledger.blocks[cid]
            self._queued -= 1
            blocks.append(cid)
            budget -= size
            ledger.blocks_sent += 1
            ledger.bytes_sent += size
        return Batch(tuple(blocks), tuple(haves), tuple(dont))

    def has_work(self, peer: Peer) -> bool:
        ledger = self.ledgers.get(peer)
        return ledger is not None and bool(ledger.presences or ledger.blocks)

    def peer_gone(self, peer: Peer) -> None:
        ledger = self.ledgers.pop(peer, None)
        if ledger is not None:
            self._queued -= len(ledger.presences) + len(ledger.blocks)
            for cid in list(ledger.waiting):
                self._unwait(peer, ledger, cid)

    def wantlist(self, peer: Peer) -> list[Cid]:
        """What ``peer`` wants from us and we have not sent (for status and tests)."""
        ledger = self.ledgers.get(peer)
        if ledger is None:
            return []
        return list(dict.fromkeys([*ledger.waiting, *ledger.presences, *ledger.blocks]))


# =====================================================================================
# Session
# =====================================================================================


@dataclass(frozen=True, slots=True)
class SessionConfig:
    window: int = 128  # CIDs in progress at once (local lookups + network wants)
    per_peer: int = 48  # want-blocks outstanding per peer
    stall_timeout: float = 5.0  # a peer with wants out that sends nothing this long gets a strike
    max_strikes: int = 2
    rebroadcast: float = 1.0  # re-ask want-have for a CID nobody has, this often
    idle_timeout: float = 60.0  # no block at all this long: the session fails
    max_frontier: int = 1 << 20  # discovered CIDs waiting their turn
    max_blocks: int = 1 << 24  # blocks in one DAG


@dataclass(frozen=True, slots=True)
class Need:
    """Look ``cid`` up locally; answer with ``Session.resolved(cid, data or None, now)``."""

    cid: Cid


@dataclass(frozen=True, slots=True)
class SendWants:
    peer: Peer
    entries: tuple[WantEntry, ...]


@dataclass(frozen=True, slots=True)
class Store:
    """A block that hashed to the CID we wanted: write it to the block store."""

    cid: Cid
    data: bytes
    peer: Peer


@dataclass(frozen=True, slots=True)
class Finished:
    blocks: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str
    timed_out: bool = False  # nothing arrived for ``idle_timeout`` (nobody had it, or everyone stalled)


@dataclass(slots=True)
class _Want:
    cid: Cid
    priority: int
    block_from: Peer | None = None  # the peer asked for the block
    asked: set = field(default_factory=set)  # every peer asked (have or block), for cancels
    have: list = field(default_factory=list)  # peers that said HAVE
    dont_have: set = field(default_factory=set)
    broadcast_at: float | None = None


@dataclass(slots=True)
class _PeerState:
    inflight: set = field(default_factory=set)  # CIDs we sent it want-block for
    last_progress: float = 0.0
    strikes: int = 0
    useful: bool = False  # sent a block or a HAVE in this session
    blocks: int = 0
    bytes: int = 0


class Session:
    """Fetches the DAG under ``root`` from a changing set of peers."""

    def __init__(self, root: Cid, now: float, rng: random.Random,
                 config: SessionConfig = SessionConfig()) -> None:
        self.root = root
        self.config = config
        self.rng = rng
        self.peers: dict[Peer, _PeerState] = {}
        self.dropped: dict[Peer, str] = {}  # peers removed for cause, and why
        self._frontier: deque[Cid] = deque([root])
        self._needs: set[Cid] = set()
        self._wants: dict[Cid, _Want] = {}
        self._seen: set[bytes] = set()  # multihashes done or in progress (a DAG may repeat a block)
        self._out: dict[Peer, list[WantEntry]] = {}
        self._cmds: list = []
        self._seq = 0
        self._last_progress = now
        self.blocks = 0
        self.bytes = 0
        self.done = False

    # --- events -------------------------------------------------------------------------

    def start(self, now: float) -> list:
        self._pump(now)
        return self._flush()

    def add_peer(self, peer: Peer, now: float) -> list:
        if peer in self.peers or peer in self.dropped or self.done:
            return []
        self.peers[peer] = _PeerState(last_progress=now)
        for want in self._wants.values():  # a newcomer hears of every CID nobody is serving
            if want.block_from is None and not want.have:
                self._ask_have(want, peer)
        return self._flush()

    def remove_peer(self, peer: Peer, now: float, reason: str = "disconnected") -> list:
        """``peer`` is gone (or, with another ``reason``, dropped for cause): its wants go elsewhere."""
        self._remove(peer, reason)
        self._pump(now)
        return self._flush()

    def peer_misbehaved(self, peer: Peer, now: float, reason: str) -> list:
        """``peer`` sent a block nobody asked for (e.g. corrupted): stop using it."""
        return self.remove_peer(peer, now, reason)

    def fail_now(self, reason: str) -> list:
        """Give up (cancelled, or the block store refused a block): withdraw every want."""
        self._fail(reason)
        return self._flush()

    def wants(self, cid: Cid) -> bool:
        return cid in self._wants

    def seen(self, cid: Cid) -> bool:
        """True for a CID of this DAG already fetched or in progress (duplicates are not misbehaviour)."""
        return cid.multihash in self._seen

    def resolved(self, cid: Cid, data: bytes | None, now: float) -> list:
        """The driver's answer to ``Need(cid)``: the local block, or None to fetch it."""
        if cid not in self._needs:
            return []
        self._needs.discard(cid)
        if data is not None:
            self._accept(cid, data, now)
        else:
            self._seq += 1
            want = self._wants[cid] = _Want(cid, max(1, MAX_PRIORITY - self._seq))
            self._dispatch(want, now)
        self._pump(now)
        return self._flush()

    def on_block(self, peer: Peer, cid: Cid, data: bytes, now: float) -> list:
        """A block that hashed to ``cid`` arrived from ``peer``."""
        want = self._wants.pop(cid, None)
        state = self.peers.get(peer)
        if want is None:  # a duplicate (several peers answered): still proof the peer holds our DAG
            if state is not None and cid.multihash in self._seen:
                state.useful = True
            return self._flush()
        if state is not None:
            state.inflight.discard(cid)
            state.last_progress = now
            state.strikes = 0
            state.useful = True
            state.blocks += 1
            state.bytes += len(data)
        if want.block_from is not None and want.block_from != peer:
            other = self.peers.get(want.block_from)
            if other is not None:
                other.inflight.discard(cid)
        for asked in want.asked:
            if asked != peer and asked in self.peers:
                self._send(asked, WantEntry(cid, cancel=True))
        self._cmds.append(Store(cid, data, peer))
        self._accept(cid, data, now)
        self._pump(now)
        return self._flush()

    def on_presence(self, peer: Peer, cid: Cid, have: bool, now: float) -> list:
        want = self._wants.get(cid)
        state = self.peers.get(peer)
        if want is None or state is None:
            return []
        if have:
            state.useful = True
            if peer not in want.have:
                want.have.append(peer)
            want.dont_have.discard(peer)
        else:
            want.dont_have.add(peer)
            if peer in want.have:
                want.have.remove(peer)
            if want.block_from == peer:
                want.block_from = None
                state.inflight.discard(cid)
        if want.block_from is None:
            self._dispatch(want, now)
        self._pump(now)
        return self._flush()

    def tick(self, now: float) -> list:
        if self.done:
            return []
        for peer, state in list(self.peers.items()):
            if state.inflight and now - state.last_progress >= self.config.stall_timeout:
                self._stalled(peer, state, now)
        for want in list(self._wants.values()):
            if (want.block_from is None and not want.have and want.broadcast_at is not None
                    and now - want.broadcast_at >= self.config.rebroadcast):
                want.dont_have.clear()  # ask everyone again: some may have it by now
                want.broadcast_at = None
                self._dispatch(want, now)
        if not self.done and now - self._last_progress >= self.config.idle_timeout:
            self._fail(f"no block arrived for {self.config.idle_timeout:g} s "
                       f"({len(self._wants)} wanted, {len(self.peers)} peers)", timed_out=True)
        self._pump(now)
        return self._flush()

    def next_deadline(self) -> float | None:
        if self.done:
            return None
        times = [self._last_progress + self.config.idle_timeout]
        times += [s.last_progress + self.config.stall_timeout for s in self.peers.values() if s.inflight]
        times += [w.broadcast_at + self.config.rebroadcast for w in self._wants.values()
                  if w.block_from is None and not w.have and w.broadcast_at is not None]
        return min(times)

    def stats(self) -> dict:
        return {"root": str(self.root), "blocks": self.blocks, "bytes": self.bytes,
                "wanted": len(self._wants), "frontier": len(self._frontier), "peers": len(self.peers),
                "dropped": {str(p): r for p, r in self.dropped.items()}, "done": self.done}

    # --- internals ----------------------------------------------------------------------

    def _accept(self, cid: Cid, data: bytes, now: float) -> None:
        self._last_progress = now
        self.blocks += 1
        self.bytes += len(data)
        if cid.codec == DAG_PB:
            try:
                links = dagpb.decode(data).links
            except (BadBlock, BadCid) as exc:
                self._fail(f"block {cid} is not valid dag-pb: {exc}")
                return
            if len(self._frontier) + len(links) > self.config.max_frontier:
                self._fail(f"the DAG under {self.root} is too wide (over {self.config.max_frontier} pending links)")
                return
            self._frontier.extendleft(link.hash for link in reversed(links))

    def _pump(self, now: float) -> None:
        """Start CIDs from the frontier while the window allows; finish when nothing is left."""
        while not self.done and self._frontier and len(self._needs) + len(self._wants) < self.config.window:
            cid = self._frontier.popleft()
            if cid.multihash in self._seen:
                continue
            if len(self._seen) >= self.config.max_blocks:
                self._fail(f"the DAG under {self.root} has more than {self.config.max_blocks} blocks")
                return
            self._seen.add(cid.multihash)
            self._needs.add(cid)
            self._cmds.append(Need(cid))
        for want in self._wants.values():
            if want.block_from is None:
                self._dispatch(want, now)
        if not self.done and not self._frontier and not self._needs and not self._wants:
            self.done = True
            self._cmds.append(Finished(self.blocks, self.bytes))

    def _dispatch(self, want: _Want, now: float) -> None:
        if want.block_from is not None or self.done:
            return
        target = self._pick(want)
        if target is not None:
            state = self.peers[target]
            if not state.inflight:
                state.last_progress = now
            state.inflight.add(want.cid)
            want.block_from = target
            want.asked.add(target)
            self._send(target, WantEntry(want.cid, want.priority, want_type=WANT_BLOCK, send_dont_have=True))
        elif not want.have and want.broadcast_at is None and not self._busy_helpers(want):
            want.broadcast_at = now
            for peer in self.peers:
                if peer not in want.dont_have:
                    self._ask_have(want, peer)

    def _pick(self, want: _Want) -> Peer | None:
        limit = self.config.per_peer
        holders = [p for p in want.have if len(self.peers[p].inflight) < limit]
        if not holders and not want.have:
            holders = [p for p, s in self.peers.items()
                       if s.useful and p not in want.dont_have and len(s.inflight) < limit]
        if not holders:
            return None
        least = min(len(self.peers[p].inflight) for p in holders)
        return self.rng.choice([p for p in holders if len(self.peers[p].inflight) == least])

    def _busy_helpers(self, want: _Want) -> bool:
        """Some useful peer could serve ``want`` but is at its limit: wait for it rather than broadcast."""
        return any(s.useful and p not in want.dont_have for p, s in self.peers.items())

    def _ask_have(self, want: _Want, peer: Peer) -> None:
        want.asked.add(peer)
        self._send(peer, WantEntry(want.cid, want.priority, want_type=WANT_HAVE, send_dont_have=True))

    def _remove(self, peer: Peer, reason: str) -> None:
        state = self.peers.pop(peer, None)
        if state is None:
            return
        if reason != "disconnected":
            self.dropped[peer] = reason
        for cid in sorted(state.inflight, key=bytes):
            want = self._wants.get(cid)
            if want is not None and want.block_from == peer:
                want.block_from = None
        for want in self._wants.values():
            want.dont_have.discard(peer)
            if peer in want.have:
                want.have.remove(peer)
        self._out.pop(peer, None)

    def _stalled(self, peer: Peer, state: _PeerState, now: float) -> None:
        state.strikes += 1
        if state.strikes >= self.config.max_strikes:
            self._remove(peer, f"sent nothing for {self.config.stall_timeout:g} s, {state.strikes} times")
            return
        state.last_progress = now
        for cid in sorted(state.inflight, key=bytes):
            want = self._wants[cid]
            want.block_from = None
            want.dont_have.add(peer)
            if peer in want.have:
                want.have.remove(peer)
            self._send(peer, WantEntry(cid, cancel=True))
        state.inflight.clear()
        for cid in list(self._wants):
            self._dispatch(self._wants[cid], now)

    def _send(self, peer: Peer, entry: WantEntry) -> None:
        self._out.setdefault(peer, []).append(entry)

    def _fail(self, reason: str, timed_out: bool = False) -> None:
        if self.done:
            return
        self.done = True
        self._cmds.append(Failed(reason, timed_out))
        for cid, want in self._wants.items():  # withdraw every want we made
            for peer in want.asked:
                if peer in self.peers:
                    self._send(peer, WantEntry(cid, cancel=True))
        self._wants.clear()

    def _flush(self) -> list:
        cmds = self._cmds
        cmds.extend(SendWants(peer, tuple(entries)) for peer, entries in self._out.items() if entries)
        self._cmds, self._out = [], {}
        return cmds
