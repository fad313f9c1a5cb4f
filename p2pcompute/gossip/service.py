"""The trio driver of membership: a ``Membership`` state machine on a node's Transport.

Theory of operation
-------------------
``MembershipService`` is a node service (``node/service.py``). It registers a
handler for every membership message type; each arriving message becomes a
``Received`` event. Timers are the state machine's ``SetTimer`` commands: at
most one per kind, kept in a dict, served by one task that sleeps until the
earliest. ``Send`` commands become one-way ``transport.send`` calls in the
node's nursery, bounded in number (beyond ``max_inflight`` they are dropped
and counted: membership tolerates loss by design). ``MemberChanged`` teaches
the transport where a new member listens and is logged; that is all the
driver decides — everything else is the state machine's.

On start it signs this peer's capability record, joins through the node's
bootstrap and remembered peers (a peer with none starts a network), and on
the way out announces a clean leave.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import trio

from ..errors import TransportError
from ..node.api import HttpError, json_response
from ..node.identity import PeerId
from . import events as ev
from .capability import SUPPORTED_OPSET_NAMES, detect_resources, make_record
from .events import MembershipConfig, TimerKind
from .membership import Membership
from .messages import ALIVE, DEAD, LEFT, STATE_NAMES, SUSPECT, Ack, Gossip, Nack, Ping, PingReq, PushPull, PushPullReply

log = logging.getLogger(__name__)

# what hostile or broken news the state machine dropped (shown by `status`)
_REFUSALS = ("implausible_updates", "new_members_refused", "table_full", "hearsay_evicted", "bad_records",
             "ping_reqs_refused")

MESSAGE_TYPES = (Ping, Ack, PingReq, Nack, Gossip, PushPull, PushPullReply)


class MembershipService:
    name = "membership"

    def __init__(self, config: MembershipConfig | None = None, rng: random.Random | None = None,
                 *, max_inflight: int = 512, wall_clock: Any = time.time) -> None:
        self.config = config or MembershipConfig()
        self.rng = rng or random.Random()
        self.max_inflight = max_inflight
        self._wall = wall_clock
        self.sm: Membership | None = None
        self.node: Any = None
        self._timers: dict[TimerKind, float] = {}
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._inflight = 0
        self.dropped_sends = 0
        self.errors = 0  # state-machine exceptions caught (bugs; see _handle)
        self._errors_logged: set[str] = set()

    # --- Service protocol -------------------------------------------------------------

    def attach(self, node: Any) -> None:
        self.node = node
        for msg_type in MESSAGE_TYPES:
            node.transport.on_message(msg_type, self._on_message)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        node = self.node
        now = trio.current_time()
        announced = node.transport.announce_addresses()  # routable first; announce / no_announce applied
        self.sm = Membership(node.peer_id, self.config, self.rng, now,
                             address=announced[0].split("/p2p/")[0] if announced else "")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._apply(self.sm.handle(ev.SetCapability(self._capability_claim()), now))
            seeds = tuple(k.peer for k in node.peering.table() if k.addrs)
            self._apply(self.sm.handle(ev.Join(seeds), now))
            nursery.start_soon(self._timer_loop)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await self._leave()
                self._nursery = None

    def status(self) -> dict[str, Any]:
        if self.sm is None:
            return {}
        counts = {name: 0 for name in STATE_NAMES}
        for row in self.sm.members():
            counts[row.state] += 1
        return {"members": counts, "health": self.sm.health, "incarnation": self.sm.incarnation,
                "dropped_sends": self.dropped_sends, "errors": self.errors,
                "refused": {k: self.sm.stats[k] for k in _REFUSALS},
                "late_timers": self.sm.stats["late_timers"],
                "judgements_deferred": self.sm.stats["judgements_deferred"]}

    def api_routes(self) -> dict:
        return {("GET", "/v1/members"): self._api_members}

    # --- queries ----------------------------------------------------------------------

    def member_rows(self) -> list[dict[str, Any]]:
        """Members with state, address, last seen and capabilities (for ``peers``)."""
        if self.sm is None:
            return []
        now = trio.current_time()
        rows = []
        for m in self.sm.members():
            if m.peer == self.node.peer_id:
                continue
            rec = m.record
            rows.append({
                "peer_id": str(m.peer), "state": m.state, "incarnation": m.incarnation, "address": m.address,
                "last_seen_s_ago": round(max(0.0, now - m.last_seen), 1), "state_for_s": round(now - m.since, 1),
                "cpus": rec.cpus if rec else None, "memory": rec.memory if rec else None,
                "labels": dict(rec.labels) if rec else {}, "arch": rec.arch if rec else "",
                "opsets": list(rec.opsets) if rec else [], "wasm": rec.wasm if rec else None,
                "free_slots": rec.free_slots if rec else None, "load": rec.load if rec else None,
            })
        return rows

    async def _api_members(self, body: bytes, query: dict) -> tuple[int, str, bytes]:
        if self.sm is None:
            raise HttpError(503, "membership is not running yet")
        return json_response({"members": self.member_rows()})

    # --- driving the state machine --------------------------------------------------------

    async def _on_message(self, peer: PeerId, msg: Any) -> None:
        if self.sm is not None:
            self._handle(ev.Received(peer, msg), trio.current_time())

    def _handle(self, event: Any, now: float) -> None:
        """Feed one event; a state-machine exception (a bug) is logged and counted, never fatal."""
        try:
            commands = self.sm.handle(event, now)
        except Exception as exc:
            self.errors += 1
            what = f"{type(event).__name__}/{type(exc).__name__}"
            if what not in self._errors_logged and len(self._errors_logged) < 64:
                self._errors_logged.add(what)
                log.exception("membership failed on %s (logged once; the daemon goes on)", type(event).__name__)
            else:
                log.debug("membership failed on %s: %s", type(event).__name__, exc)
            commands = self.sm.rearm(now)
        self._apply(commands)

    def _apply(self, commands: list) -> None:
        for cmd in commands:
            if isinstance(cmd, ev.Send):
                self._send_soon(cmd.peer, cmd.msg)
            elif isinstance(cmd, ev.SetTimer):
                self._timers[cmd.kind] = cmd.at
                self._wake.set()
            elif isinstance(cmd, ev.MemberChanged):
                self._member_changed(cmd)

    def _send_soon(self, peer: PeerId, msg: Any) -> None:
        if self._nursery is None or self._inflight >= self.max_inflight:
            self.dropped_sends += 1
            return
        self._inflight += 1
        self._nursery.start_soon(self._send, peer, msg)

    async def _send(self, peer: PeerId, msg: Any) -> None:
        member = self.sm.member(peer) if self.sm else None
        if member is not None and member.address and not member.vouched:
            self.node.transport.add_addresses(peer, [member.address])  # dialled now: it needs the address
        try:
            with trio.move_on_after(self.config.probe_interval * 2):
                await self.node.transport.send(peer, msg)
        except TransportError as exc:
            log.debug("membership message to %s not sent: %s", peer.short, exc)
        finally:
            self._inflight -= 1

    def _member_changed(self, cmd: ev.MemberChanged) -> None:
        # Members only heard of (gossip can make up thousands) reach the transport's address
        # book when first dialled (_send), and their changes are logged at debug level only.
        member = self.sm.member(cmd.peer) if self.sm else None
        first_hand = member is not None and member.vouched
        if first_hand and member.address:
            self.node.transport.add_addresses(cmd.peer, [member.address])
        old = STATE_NAMES[cmd.old] if cmd.old is not None else "unknown"
        new = STATE_NAMES[cmd.new]
        level = logging.WARNING if cmd.new in (SUSPECT, DEAD) else logging.INFO
        if not first_hand:
            level = logging.DEBUG
        if cmd.new in (ALIVE, SUSPECT, DEAD, LEFT):
            log.log(level, "member %s: %s -> %s", cmd.peer.short, old, new)

    async def _timer_loop(self) -> None:
        while True:
            self._wake = trio.Event()
            if self._timers:
                with trio.move_on_at(min(self._timers.values())):
                    await self._wake.wait()
            else:
                await self._wake.wait()
            now = trio.current_time()
            for kind in [k for k, at in self._timers.items() if at <= now]:
                del self._timers[kind]
                self._handle(ev.TimerFired(kind), now)

    async def _leave(self) -> None:
        if self.sm is None:
            return
        commands = self.sm.handle(ev.Leave(), trio.current_time())
        async with trio.open_nursery() as nursery:
            for cmd in commands:
                if isinstance(cmd, ev.Send):
                    nursery.start_soon(self._send_quietly, cmd.peer, cmd.msg)

    async def _send_quietly(self, peer: PeerId, msg: Any) -> None:
        try:
            await self.node.transport.send(peer, msg)
        except TransportError:
            pass

    def _capability_claim(self) -> bytes:
        res = self.node.resources
        return make_record(self.node.identity, int(self._wall() * 1000), cpus=res.cpus, memory=res.memory,
                           arch=detect_resources()["arch"], free_slots=max(1, int(res.cpus)),
                           labels=dict(res.labels), opsets=SUPPORTED_OPSET_NAMES)
