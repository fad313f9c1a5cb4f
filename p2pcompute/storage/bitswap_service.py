"""``BitswapService``: bitswap 1.2.0 on a node's Transport (the node service named "bitswap").

Theory of operation
-------------------
The decisions are in ``bitswap.py`` (``Engine`` serves, one ``Session`` per
fetch); this driver moves bytes and time, with ``trio.current_time()`` as
``now``:

* **Inbound.** ``attach`` serves ``/ipfs/bitswap/1.2.0`` (and 1.1.0, 1.0.0:
  same messages, older fields). Every inbound stream is read as a sequence
  of varint-framed messages until it ends — kubo keeps one stream per peer
  and reuses it, or opens a new one per message after an error; both work.
  A malformed message resets that stream only. Large messages are decoded
  in a worker thread, and wants go to the engine in slices of
  ``WANT_SLICE`` with a checkpoint between (a 16384-entry message does not
  stall the event loop), and the next message of a peer is read
  only after ``engine.read_delay`` (its want tokens): a flood slows down
  its sender through flow control, not us. A peer holds at most
  ``MAX_STREAMS_IN`` inbound streams (each buffers up to a muxer window). A peer the engine drops has its
  streams reset, and new ones too while it is banned. Blocks are hashed to get
  their CID (``bitswap_pb.Block.cid``) and go to the sessions that want that
  CID; a block no session wants and we did not just receive is
  *unsolicited*: its sender is dropped from every session (a corrupted block
  hashes to a CID nobody asked for). Presences go to the sessions, wants to
  the engine.
* **Outbound.** Replies and wants travel on our own stream to the peer (as
  go-bitswap does: a side never answers on the other side's stream), one
  per peer, kept open, reopened once on error. A per-peer sender task
  writes whenever there is something to say: the queued want entries (from
  sessions) plus ``engine.next_batch`` (presences, blocks up to ~1 MiB read
  from the block store) in one message. It pulls the next batch only when
  the previous write finished, so a slow reader slows only its own sender
  and memory stays at about one batch per peer. A write that does not
  finish within ``send_timeout`` (the peer does not read) or fails while
  the peer is still connected gets the peer dropped (``send_failed``). The
  sender exits after ``IDLE_SENDER`` seconds without work.
* **Fetching.** ``fetch_dag(root, providers)`` runs a ``Session``: its
  ``Need`` commands are answered from the block store at once, ``Store``
  writes verified blocks (``put(verified=True)``: the driver hashed them),
  ``SendWants`` feed the senders, and a timer task calls ``tick`` at
  ``next_deadline``. Without explicit providers every connected peer (and
  every peer that connects during the fetch) is a candidate. The generator
  yields ``Progress`` snapshots (coalesced, so a slow consumer never slows
  the transfer) and raises when the session fails. The block store's
  ``session()`` lock holds off GC of the half-fetched DAG.

Peers of every libp2p key type take part (kubo repos often have RSA keys,
``Qm...``): bitswap needs nothing of a peer but its ID.
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..errors import (
    BlockNotFound, CorruptBlock, P2PComputeError, RequestFailed, RequestTimeout, StorageError, TransportError,
    UserError, WireError,
)
from ..node.api import HttpError, json_response, parse_json_body
from ..node.framing import FrameReader, frame
from ..node.identity import PeerId
from ..node.transport import ProtocolNotSupported
from . import bitswap_pb as pb
from .bitswap import Batch, Engine, EngineConfig, Failed, Finished, Need, SendWants, Session, SessionConfig, Store
from .blockstore import Blockstore
from .cid import Cid, parse_cid

if TYPE_CHECKING:
    from ..node.node import Node

log = logging.getLogger(__name__)

PROTOCOL = "/ipfs/bitswap/1.2.0"
INBOUND_PROTOCOLS = (PROTOCOL, "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/bitswap")
IDLE_SENDER = 30.0
MAX_WANTS_PER_MESSAGE = 4096
MAX_QUEUED_WANTS = 65536  # per peer, beyond which the oldest entries are dropped
MAX_SESSIONS = 32
RECENT_BLOCKS = 8192
READ_SIZE = 1 << 20
WANT_SLICE = 256  # want entries handed to the engine between two checkpoints (~4 ms of work)
MAX_STREAMS_IN = 2  # inbound bitswap streams a peer may hold open at once
DECODE_IN_THREAD = 64 * 1024  # messages larger than this are decoded in a worker thread (the loop keeps running)


class _NotReading(TransportError):
    """Writes to a connected peer stall: it does not read what we send."""


class _BigReader(FrameReader):
    """Frames read in reads of up to 1 MiB: bitswap messages are big, and each read costs a muxer round."""

    async def _fill(self) -> bool:
        chunk = await self._stream.read(READ_SIZE)
        if not chunk:
            return False
        self._buf += chunk
        return True


def parse_peer(text: str) -> PeerId:
    try:
        return PeerId.from_string(text)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Progress:
    root: Cid
    blocks: int
    bytes: int
    done: bool


@dataclass
class _Sender:
    wants: list[pb.WantEntry] = field(default_factory=list)
    wake: trio.Event = field(default_factory=trio.Event)
    stream: Any = None
    running: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass
class _Run:
    session: Session
    providers: set[PeerId] | None
    changed: trio.Event = field(default_factory=trio.Event)
    wake_timer: trio.Event = field(default_factory=trio.Event)
    error: str | None = None
    timed_out: bool = False
    finished: bool = False
    timer_scope: trio.CancelScope | None = None


class BitswapService:
    """Serves our blocks and fetches DAGs over bitswap."""

    name = "bitswap"

    def __init__(self, blockstore: Blockstore | None = None, *, engine_config: EngineConfig = EngineConfig(),
                 session_config: SessionConfig = SessionConfig(), rng: random.Random | None = None) -> None:
        self.blockstore = blockstore
        self.engine = Engine(self._size_of, engine_config)
        self.session_config = session_config
        self._rng = rng
        self._transport: Any = None
        self._nursery: trio.Nursery | None = None
        self._senders: dict[PeerId, _Sender] = {}
        self._runs: list[_Run] = []
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._streams_in: dict[PeerId, set[Any]] = {}  # open inbound streams, to reset a dropped peer's
        self._turns: dict[PeerId, trio.Lock] = {}
        self.stats = {"blocks_received": 0, "bytes_received": 0, "duplicate_blocks": 0, "unsolicited_blocks": 0,
                      "blocks_sent": 0, "bytes_sent": 0, "messages_received": 0, "messages_sent": 0,
                      "bad_messages": 0, "fetches": 0, "fetches_failed": 0}

    # --- Service protocol ---------------------------------------------------------------

    def attach(self, node: Node) -> None:
        if self.blockstore is None:
            storage = node.services.get("storage")
            if storage is None or getattr(storage, "blockstore", None) is None:
                raise UserError("the bitswap service needs a blockstore: attach the storage service first")
            self.blockstore = storage.blockstore
        self._transport = node.transport
        if self._rng is None:
            self._rng = random.Random(node.rng.getrandbits(64))
        for protocol in INBOUND_PROTOCOLS:
            node.transport.on_stream(protocol, self._inbound)
        node.transport.on_peer_event(self._peer_event)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def status(self) -> dict[str, Any]:
        return dict(self.stats) | self.engine.counts | {"peers_served": len(self.engine.ledgers),
                                   "sessions": [run.session.stats() for run in self._runs]}

    def api_routes(self) -> dict:
        return {("POST", "/v1/bitswap/fetch"): self._api_fetch}

    # --- fetching -----------------------------------------------------------------------

    async def fetch_dag(self, root: Cid | str, providers: list[PeerId | str] | None = None,
                        *, config: SessionConfig | None = None,
                        started: float | None = None) -> AsyncIterator[Progress]:
        """Fetch the DAG under ``root`` into the block store, yielding progress; raise if it fails.

        ``providers``: peer IDs or multiaddrs (dialled first) to fetch from; None means every
        connected peer and every peer that connects meanwhile. ``started``: when the caller began
        (its ``idle_timeout`` counts from then until the first block; ``RequestTimeout`` when it passes).
        Closing the generator early (the caller is cancelled) withdraws every want at once.
        """
        if self._nursery is None:
            raise TransportError("the bitswap service is not running")
        if len(self._runs) >= MAX_SESSIONS:
            raise TransportError(f"{MAX_SESSIONS} fetches already running; try again later")
        root = parse_cid(root)
        peers = await self._resolve_providers(providers)
        now = trio.current_time()
        run = _Run(Session(root, now if started is None else min(started, now), random.Random(self._rng.getrandbits(64)), config or self.session_config),
                   None if providers is None else set(peers))
        self._runs.append(run)
        self.stats["fetches"] += 1
        with self.blockstore.session():
            try:
                for peer in peers:
                    self._apply(run, run.session.add_peer(peer, now))
                self._apply(run, run.session.start(now))
                run.timer_scope = trio.CancelScope()
                self._nursery.start_soon(self._timer, run)
                while True:
                    if not run.finished:
                        await run.changed.wait()
                    run.changed = trio.Event()
                    s = run.session
                    if run.error is not None:
                        self.stats["fetches_failed"] += 1
                        raise (RequestTimeout if run.timed_out else RequestFailed)(
                            f"fetching {root} failed: {run.error}")
                    yield Progress(root, s.blocks, s.bytes, run.finished)
                    if run.finished:
                        return
            finally:
                if run.timer_scope is not None:
                    run.timer_scope.cancel()
                if not run.finished:
                    self._apply(run, run.session.fail_now("cancelled"))
                self._runs.remove(run)

    async def fetch(self, root: Cid | str, providers: list[PeerId | str] | None = None,
                    *, config: SessionConfig | None = None) -> Progress:
        """``fetch_dag`` to the end; return the last progress."""
        last = None
        async with aclosing(self.fetch_dag(root, providers, config=config)) as progress:
            async for last in progress:
                pass
        return last

    async def _resolve_providers(self, providers: list[PeerId | str] | None) -> list[PeerId]:
        if providers is None:
            return [p for p in self._transport.connected_peers() if p != self._transport.local_id]
        out = []
        for p in providers:
            if isinstance(p, PeerId):
                out.append(p)
            elif "/p2p/" in p:
                out.append(await self.connect(p))
            else:
                out.append(parse_peer(p))
        return list(dict.fromkeys(out))

    async def connect(self, address: str) -> PeerId:
        """Dial a multiaddr ending in /p2p/ID (any libp2p key type)."""
        return await self._transport.connect(address)

    async def _timer(self, run: _Run) -> None:
        with run.timer_scope:
            while not run.finished:
                deadline = run.session.next_deadline()
                with trio.move_on_at(deadline if deadline is not None else trio.current_time() + 3600):
                    await run.wake_timer.wait()
                run.wake_timer = trio.Event()
                if deadline is not None and trio.current_time() >= deadline:
                    self._apply(run, run.session.tick(trio.current_time()))

    def _apply(self, run: _Run, cmds: list) -> None:
        """Carry out a session's commands (``Need`` answers feed it more, handled in the same loop)."""
        queue = list(cmds)
        while queue:
            cmd = queue.pop(0)
            if isinstance(cmd, Need):
                queue.extend(run.session.resolved(cmd.cid, self._local(cmd.cid), trio.current_time()))
            elif isinstance(cmd, SendWants):
                self._queue_wants(cmd.peer, cmd.entries)
            elif isinstance(cmd, Store):
                try:
                    self.blockstore.put(cmd.cid, cmd.data, verified=True)
                except (StorageError, WireError) as exc:
                    queue.extend(run.session.fail_now(f"cannot store block {cmd.cid}: {exc}"))
                    continue
                self._remember(cmd.cid)
                for peer in self.engine.block_added(cmd.cid):
                    self._wake(peer)
            elif isinstance(cmd, Finished):
                run.finished = True
            elif isinstance(cmd, Failed):
                run.error = cmd.reason
                run.timed_out = cmd.timed_out
                run.finished = True
        run.changed.set()
        run.wake_timer.set()

    def _local(self, cid: Cid) -> bytes | None:
        try:
            return self.blockstore.get(cid)
        except (BlockNotFound, CorruptBlock):
            return None

    def _size_of(self, cid: Cid) -> int | None:
        try:
            return self.blockstore.path(cid).stat().st_size
        except OSError:
            return None

    def _remember(self, cid: Cid) -> None:
        self._recent[cid.multihash] = None
        self._recent.move_to_end(cid.multihash)
        while len(self._recent) > RECENT_BLOCKS:
            self._recent.popitem(last=False)

    # --- inbound ------------------------------------------------------------------------

    async def _inbound(self, peer: PeerId, stream: Any) -> None:
        if self.engine.banned(peer, trio.current_time()):
            await stream.reset()
            return
        streams = self._streams_in.setdefault(peer, set())
        if len(streams) >= MAX_STREAMS_IN:  # kubo keeps one; each holds a muxer window of buffered bytes
            log.debug("bitswap: %s opened over %d streams; resetting the newest", peer.short, MAX_STREAMS_IN)
            await stream.reset()
            return
        reader = _BigReader(stream, pb.MAX_MESSAGE)
        streams.add(stream)
        lock = self._turns.setdefault(peer, trio.Lock())  # one message of a peer at a time, over all its streams
        try:
            while (data := await reader.read_frame()) is not None:
                async with lock:
                    await trio.sleep(self.engine.read_delay(peer, trio.current_time()))
                    if self.engine.banned(peer, trio.current_time()):
                        await stream.reset()
                        break
                    self.stats["messages_received"] += 1
                    msg = (pb.decode(data) if len(data) <= DECODE_IN_THREAD
                           else await trio.to_thread.run_sync(pb.decode, data))
                    await self._on_message(peer, msg)
        except WireError as exc:
            self.stats["bad_messages"] += 1
            log.warning("bad bitswap message from %s (%s): %s", peer.short, exc.reason, exc)
            await stream.reset()
        except TransportError as exc:
            log.debug("bitswap stream from %s ended: %s", peer.short, exc)
        finally:
            streams.discard(stream)
            if not streams and self._streams_in.get(peer) is streams:
                del self._streams_in[peer]
                self._turns.pop(peer, None)

    async def _on_message(self, peer: PeerId, msg: pb.Message) -> None:
        now = trio.current_time()
        for block in msg.blocks:
            self._on_block(peer, block.cid(), block.data, now)
        for presence in msg.presences:
            for run in list(self._runs):
                if run.session.wants(presence.cid):
                    self._apply(run, run.session.on_presence(peer, presence.cid, presence.have, now))
        full = msg.full
        for start in range(0, max(1, len(msg.wants)), WANT_SLICE):
            part = pb.Message(wants=msg.wants[start:start + WANT_SLICE], full=full)
            full = False
            for woken in self.engine.receive(peer, part, trio.current_time()):
                self._wake(woken)
            if self._drop_peers():
                return
            if len(msg.wants) > WANT_SLICE:
                await trio.sleep(0)

    def _drop_peers(self) -> bool:
        """Carry out the engine's drops: stop the sender, reset the streams. True if any."""
        drops = self.engine.take_drops()
        for peer, reason in drops:
            log.warning("bitswap: dropping %s for %g s: %s", peer.short, self.engine.config.ban_seconds, reason)
            sender = self._senders.pop(peer, None)
            if sender is not None:
                sender.scope.cancel()
            for stream in self._streams_in.pop(peer, set()):
                if self._nursery is not None:
                    self._nursery.start_soon(stream.reset)
        return bool(drops)

    def _on_block(self, peer: PeerId, cid: Cid, data: bytes, now: float) -> None:
        """``cid`` was computed by hashing ``data``: it is what the peer really sent."""
        self.stats["blocks_received"] += 1
        self.stats["bytes_received"] += len(data)
        runs = [run for run in self._runs if run.session.wants(cid) or run.session.seen(cid)]
        if runs:
            for run in runs:
                self._apply(run, run.session.on_block(peer, cid, data, now))
        elif cid.multihash in self._recent:
            self.stats["duplicate_blocks"] += 1
        else:
            self.stats["unsolicited_blocks"] += 1
            log.warning("%s sent block %s that nobody asked for (corrupted?): dropping it from fetches",
                        peer.short, cid)
            for run in list(self._runs):
                self._apply(run, run.session.peer_misbehaved(peer, now, "sent a block nobody asked for"))

    def _peer_event(self, peer: PeerId, connected: bool) -> None:
        now = trio.current_time()
        for run in list(self._runs):
            if connected and run.providers is None:
                self._apply(run, run.session.add_peer(peer, now))
            elif not connected:
                self._apply(run, run.session.remove_peer(peer, now))
        if not connected:
            self.engine.peer_gone(peer)
            sender = self._senders.get(peer)
            if sender is not None:
                sender.wants.clear()
                sender.stream = None
                sender.wake.set()

    # --- outbound -----------------------------------------------------------------------

    def _queue_wants(self, peer: PeerId, entries: tuple[pb.WantEntry, ...]) -> None:
        sender = self._senders.get(peer) or self._new_sender(peer)
        sender.wants.extend(entries)
        if len(sender.wants) > MAX_QUEUED_WANTS:
            del sender.wants[:-MAX_QUEUED_WANTS]
        sender.wake.set()

    def _wake(self, peer: PeerId) -> None:
        sender = self._senders.get(peer) or self._new_sender(peer)
        sender.wake.set()

    def _new_sender(self, peer: PeerId) -> _Sender:
        sender = self._senders[peer] = _Sender()
        if self._nursery is not None:
            sender.running = True
            self._nursery.start_soon(self._send_loop, peer, sender)
        return sender

    async def _send_loop(self, peer: PeerId, sender: _Sender) -> None:
        try:
            with sender.scope:
                while True:
                    if not sender.wants and not self.engine.has_work(peer):
                        sender.wake = trio.Event()
                        with trio.move_on_after(IDLE_SENDER) as idle:
                            await sender.wake.wait()
                        if idle.cancelled_caught:
                            return
                        continue
                    wants = sender.wants[:MAX_WANTS_PER_MESSAGE]
                    del sender.wants[:MAX_WANTS_PER_MESSAGE]
                    batch = self.engine.next_batch(peer)
                    msg = self._message(wants, batch)
                    if msg:
                        with trio.move_on_after(self.engine.config.send_timeout) as late:
                            await self._write(peer, sender, pb.encode(msg))
                        if late.cancelled_caught:
                            raise _NotReading(f"a write took over {self.engine.config.send_timeout:g} s")
        except (TransportError, P2PComputeError) as exc:
            now = trio.current_time()
            # a write that stalls or fails on two streams, or a peer that asks yet refuses bitswap streams,
            # takes no replies; a stream that merely failed to open is the transport's trouble (py-libp2p
            # fails some opens under load): banning for that locked honest peers out of inputs for a minute
            stuck = isinstance(exc, (_NotReading, ProtocolNotSupported))
            if stuck:
                if not self.engine.banned(peer, now):
                    self.engine.send_failed(peer, now, f"it does not read our replies: {exc}")
                    self._drop_peers()
            else:
                log.info("bitswap: cannot send to %s: %s", peer.short, exc)
                self.engine.peer_gone(peer)
        finally:
            if self._senders.get(peer) is sender:
                del self._senders[peer]
            if sender.stream is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await sender.stream.reset() if sender.scope.cancel_called else await sender.stream.close()

    def _message(self, wants: list[pb.WantEntry], batch: Batch | None) -> pb.Message:
        if batch is None:
            return pb.Message(wants=tuple(wants))
        blocks, missing = [], []
        for cid in batch.blocks:
            data = self._local(cid)
            if data is None:
                missing.append(cid)  # removed since it was queued
            else:
                blocks.append(pb.Block.of(cid, data))
                self.stats["blocks_sent"] += 1
                self.stats["bytes_sent"] += len(data)
        presences = [pb.Presence(c, True) for c in batch.haves]
        presences += [pb.Presence(c, False) for c in (*batch.dont_haves, *missing)]
        return pb.Message(wants=tuple(wants), blocks=tuple(blocks), presences=tuple(presences))

    async def _write(self, peer: PeerId, sender: _Sender, payload: bytes) -> None:
        data = frame(payload)
        for attempt in (1, 2):
            if sender.stream is None:
                sender.stream = await self._transport.open_stream(peer, PROTOCOL)
            try:
                await sender.stream.write(data)
                self.stats["messages_sent"] += 1
                return
            except TransportError:
                stream, sender.stream = sender.stream, None
                await stream.reset()
                if attempt == 2:
                    raise _NotReading(f"{peer.short} took no replies on two streams") from None

    # --- control API ----------------------------------------------------------------------

    async def _api_fetch(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        """POST /v1/bitswap/fetch {"cid": ..., "peers": [ID or multiaddr, ...], "pin": true}."""
        req = parse_json_body(body)
        try:
            root = parse_cid(str(req.get("cid", "")))
        except WireError as exc:
            raise HttpError(400, f"give {{\"cid\": \"Qm... or bafy...\"}}: {exc}") from None
        peers = req.get("peers")
        if peers is not None and (not isinstance(peers, list) or not all(isinstance(p, str) for p in peers)):
            raise HttpError(400, "\"peers\" must be a list of peer IDs or multiaddrs")
        started = trio.current_time()
        last = await self.fetch(root, peers)
        if req.get("pin", True):
            self.blockstore.pin(root)
        seconds = trio.current_time() - started
        return json_response({"cid": str(root), "blocks": last.blocks, "bytes": last.bytes,
                              "seconds": round(seconds, 3), "pinned": bool(req.get("pin", True))})
