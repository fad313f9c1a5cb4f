"""SWIM + Lifeguard membership as a pure state machine: events and ``now`` in, commands out.

Theory of operation
-------------------
*Probing.* Every probe period (``probe_interval``) the peer pings the next
member in randomized round-robin order. No ack within ``probe_timeout``: it
asks ``indirect_probes`` alive members to ping the target for it (``PingReq``);
each relay answers with the target's ack, or with a ``Nack`` before the
prober's deadline when the target stays silent (it nacks after
``nack_fraction`` of the prober's remaining window). No ack by the end of the
period: the target becomes *suspect*.

*Suspicion* (Lifeguard). A suspicion expires after a timeout that starts at
β·min and shrinks towards min = α·log10(N)·probe_interval as independent
confirmations (distinct suspecting peers, carried in ``Update.origins``)
arrive: timeout = max(min, max − (max − min)·log(C+1)/log(K+1)). At expiry the
member is declared *dead*. A live peer that hears it is suspected (or dead)
at its incarnation refutes by announcing itself alive at a higher one; only
it can do so, and the merge rule (``table.join``) makes that the only way
back. A peer never accepts its own death.

*Confirmation probes.* A peer that hears of a new suspicion from others
probes the suspect next, instead of the next member in its round, with
probability ``confirm_probers / N``: about that many peers across the
network check the suspect at once. Their verdicts are independent
confirmations, so a dead peer's suspicion shrinks to its minimum within
about one probe period instead of waiting for round-robin probes to reach
it; and a live suspect hears of the suspicion from their pings and refutes
sooner. It costs no extra ping (a probe is moved, not added), only the
indirect probes of a suspect that really is silent.

*Local health* (Lifeguard LHM). A score 0..max_health−1 rises on failed
probes (by the number of missed nacks when relays were asked) and on
refuting a suspicion about ourselves, and falls on each successful probe.
Probe timeout and period are scaled by score+1, so a slow or overloaded peer
slows its own judgements instead of accusing healthy peers. Our own lateness
counts too: a timer that fires more than ``late_tolerance`` after its
deadline (or after it was set) means our loop is starved; health rises (once
per probe period at most), and a verdict due then (a probe's phase, a
suspicion's expiry) waits once for a grace period, so that the acks and
refutations that arrived while we slept are handled first: a starved loop
runs a due timer in one step, a message only after many.

*Dissemination.* Updates and capability records wait in ``BroadcastQueue``s
and ride on every message (membership first); each is sent about
λ·log10(N+1) times. Dedicated ``Gossip`` rounds to ``gossip_fanout`` random
members every ``gossip_interval`` carry fresh news fast, and push-pull
anti-entropy (its period growing with log2 N) repairs whatever was missed;
joining is a push-pull with the seeds. Capability records merge by their own
version, independent of incarnations.

*Hostile news.* Updates are unsigned: anyone can forward anything. An
incarnation more than ``max_incarnation_jump`` above the one held is dropped
(peers raise theirs by one per refutation). A new member costs its sender a
token (``new_member_burst``, then ``new_member_rate`` per second; a peer's word
on itself and our join's replies are free); the table holds ``max_members``,
making room by forgetting the longest dead, then a live member nobody
*vouched* for. A member is vouched once it sends us a message itself; gossip
rounds, relays and push-pull go to vouched members only, so members merely
heard of are dialled by probes alone, one per probe period.

Probing lives in ``probing.py`` and dissemination in ``dissemination.py``
(mixins of ``Membership``); this module holds the events, the merge of news
into the table, suspicion timing and the timer bookkeeping.

*Timers* are commands (``SetTimer``); a peer holds at most one per kind:
suspicion deadlines and relay nack deadlines live in internal heaps and only
their earliest entry is a timer. All randomness comes from the injected rng.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import WireError
from ..node.identity import PeerId
from . import events as ev
from .broadcast import BroadcastQueue
from .capability import CapabilityRecord, open_record
from .dissemination import DisseminationMixin
from .events import MembershipConfig, TimerKind
from .messages import (
    ALIVE,
    DEAD,
    LEFT,
    MAX_INCARNATION,
    PIGGYBACKED,
    STATE_NAMES,
    SUSPECT,
    Ack,
    Gossip,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullReply,
    Update,
)
from .probing import ProbingMixin, _Probe, _Relay
from .table import Member, Suspicion, Table, join, normal

_MAX_ORPHANS = 256
_MAX_SEEN_CLAIMS = 4096
_MAX_BUCKETS = 1024  # senders whose rate of new members we track (oldest forgotten first)
_GOSSIP = TimerKind.GOSSIP


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """One row of ``p2pcompute peers``."""

    peer: PeerId
    state: str
    incarnation: int
    address: str
    last_seen: float
    since: float
    record: CapabilityRecord | None


class Membership(ProbingMixin, DisseminationMixin):
    """The membership state machine of one peer. Feed events to ``handle``."""

    def __init__(
        self,
        self_id: PeerId,
        config: MembershipConfig | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
        *,
        address: str = "",
        incarnation: int = 0,
        verifier: Callable[[bytes], CapabilityRecord] = open_record,
    ) -> None:
        self.self_id = self_id
        self.config = config or MembershipConfig()
        self.address = address
        self.incarnation = incarnation
        self.health = 0
        self.started = now
        self.joined = False
        self.left = False
        self.record: CapabilityRecord | None = None
        self.stats: Counter = Counter()
        self._rng = rng or random.Random()
        self._verify = verifier
        self.table = Table(self._rng)
        self._updates = BroadcastQueue(self.config.max_broadcasts)
        self._records = BroadcastQueue(self.config.max_broadcasts)
        self._claim = b""
        self._seeds: tuple[PeerId, ...] = ()
        self._limit_n = self._limit_value = 0
        self._joining = False  # until two push-pulls (a seed's, then a random member's) answered
        self._join_replies: list[PeerId] = []
        self._timers: dict[TimerKind, float] = {}
        self._timer_from: dict[TimerKind, float] = {}  # when each timer was set (lateness counts from then)
        self._now = now
        self._seq = self._rng.getrandbits(32)
        self._probe: _Probe | None = None
        self._probe_next: list[PeerId] = []  # suspects to probe before the round continues
        self._relays: dict[int, _Relay] = {}
        self._relay_heap: list[tuple[float, int, bool]] = []  # (when, seq, expire?)
        self._suspect_heap: list[tuple[float, PeerId]] = []
        self._seen_claims: dict[bytes, None] = {}
        self._orphans: dict[PeerId, tuple[CapabilityRecord, bytes]] = {}
        self._reasserted_at = -math.inf  # when we last re-announced ourselves against an old suspicion
        self._late_at = -math.inf  # when lateness last raised our health (see _on_timer)
        self._sender: PeerId | None = None  # who sent the message being merged (None: exempt from the rate)
        self._buckets: dict[PeerId, list[float]] = {}  # sender -> [tokens, when] for new members
        self._handlers = {
            ev.TimerFired: self._on_timer,
            ev.Received: self._on_received,
            ev.Join: self._on_join,
            ev.Leave: self._on_leave,
            ev.SetCapability: self._on_set_capability,
        }

    # --- the one entry point ------------------------------------------------------

    def handle(self, event: ev.Event, now: float) -> list[ev.Command]:
        """Apply one event at time ``now``; return the commands to carry out, in order."""
        if self.left:
            return []
        out: list[ev.Command] = []
        self._now = now
        self._handlers[type(event)](event, now, out)
        if self.joined and not self.left and _GOSSIP not in self._timers and self._has_news():
            self._set_timer(_GOSSIP, now + self.config.gossip_interval, out)
        return out

    def receive(self, peer: PeerId, msg: object, now: float) -> list[ev.Command]:
        """``handle(Received(peer, msg), now)`` without building the event: a simulation's hot path."""
        if self.left:
            return []
        out: list[ev.Command] = []
        self._now = now
        self._on_message(peer, msg, now, out)
        if self.joined and not self.left and _GOSSIP not in self._timers and self._has_news():
            self._set_timer(_GOSSIP, now + self.config.gossip_interval, out)
        return out

    def rearm(self, now: float) -> list[ev.Command]:
        """Every timer again, for a driver whose ``handle`` raised (a bug): no timer is lost.

        A handler that raised midway may have set a timer whose command never
        reached the driver, or deleted one it meant to set again; after this,
        probing, suspicion expiry, relays and anti-entropy go on.
        """
        self._now = now
        out: list[ev.Command] = [ev.SetTimer(kind, at) for kind, at in self._timers.items()]
        if not self.joined or self.left:
            return out
        if TimerKind.PROBE not in self._timers:
            self._probe = None
            self._set_timer(TimerKind.PROBE, now + self.config.probe_interval, out)
        if TimerKind.PUSH_PULL not in self._timers:
            self._set_timer(TimerKind.PUSH_PULL, now + self._push_pull_delay(), out)
        if self._suspect_heap:
            self._arm_heap_timer(TimerKind.SUSPICION, self._suspect_heap[0][0], out)
        if self._relay_heap:
            self._arm_heap_timer(TimerKind.RELAY, self._relay_heap[0][0], out)
        return out

    def preload(self, known: list[tuple[Update, CapabilityRecord | None, bytes]], now: float) -> None:
        """Start from a converged view: ``known`` members, as if long since learned (before ``Join``).

        For simulations that begin in steady state instead of replaying a join
        wave: nothing is queued for dissemination and no command results, the
        same state a peer reaches once the news of every member has been
        gossiped out. Records are taken as already verified.
        """
        if self.joined:
            raise ValueError("preload comes before Join")
        members = self.table.members
        limit, own = self.config.max_members, self.self_id
        fresh = []
        for update, record, claim in known:
            if len(members) + len(fresh) >= limit:
                break
            if update.peer == own or update.peer in members:
                continue
            fresh.append(Member(update.peer, update, now, now, update.address, record, claim, vouched=True))
        self.table.add_all(fresh)

    # --- queries (for ``p2pcompute peers`` and the layers above) --------------------

    @property
    def size(self) -> int:
        """N: live members plus ourselves."""
        return len(self.table.live) + 1

    def member(self, peer: PeerId) -> Member | None:
        return self.table.get(peer)

    def state_of(self, peer: PeerId) -> int | None:
        if peer == self.self_id:
            return LEFT if self.left else ALIVE
        m = self.table.get(peer)
        return None if m is None else m.state

    def alive_members(self) -> list[PeerId]:
        return [p for p in self.table.live if self.table.members[p].state == ALIVE]

    def members(self) -> list[MemberInfo]:
        rows = [
            MemberInfo(m.peer, STATE_NAMES[m.state], m.incarnation, m.address, m.last_seen, m.since, m.record)
            for m in self.table.members.values()
        ]
        return sorted(rows, key=lambda r: (r.state, str(r.peer)))

    def suspicion_timeout(self, confirmations: int) -> float:
        """Lifeguard's timeout for a suspicion with ``confirmations`` beyond the first suspecter."""
        n = self.size
        low, high = self.config.suspicion_bounds(n)
        k = min(self.config.suspicion_confirmations, max(0, n - 2))
        if k < 1:
            return low
        frac = math.log(min(confirmations, k) + 1) / math.log(k + 1)
        return max(low, high - (high - low) * frac)

    # --- events ----------------------------------------------------------------------

    def _on_join(self, event: ev.Join, now: float, out: list) -> None:
        cfg = self.config
        self.joined = True
        self._seeds = tuple(p for p in event.seeds if p != self.self_id)[:16]
        self._joining = bool(self._seeds)
        self._join_replies = []
        self._queue_update(self._self_update())
        for seed in self._seeds:
            out.append(ev.Send(seed, self._push_pull(PushPull, join=True)))
        self._set_timer(TimerKind.PROBE, now + self._rng.uniform(0, cfg.probe_interval), out)
        self._set_timer(TimerKind.PUSH_PULL, now + self._push_pull_delay(), out)

    def _on_leave(self, event: ev.Leave, now: float, out: list) -> None:
        update = Update(self.self_id, LEFT, self.incarnation, (), self.address)
        for peer in self.table.sample(self.config.leave_fanout):
            out.append(ev.Send(peer, Gossip(updates=(update,))))
        out.append(ev.MemberChanged(self.self_id, ALIVE, LEFT))
        self.left = True
        self._timers.clear()

    def _on_set_capability(self, event: ev.SetCapability, now: float, out: list) -> None:
        record = self._verify(event.claim)
        if record.peer_id != self.self_id:
            raise ValueError("a capability record for another peer cannot be published as ours")
        if self.record is not None and record.version <= self.record.version:
            return
        self.record, self._claim = record, event.claim
        self._records.push(self.self_id.raw, event.claim, len(event.claim) + 8)
        out.append(ev.CapabilityChanged(self.self_id, record))

    def _on_timer(self, event: ev.TimerFired, now: float, out: list) -> None:
        due = self._timers.get(event.kind)
        if due is None or now < due:
            return  # stale or early: the live timer of this kind is still set
        del self._timers[event.kind]
        kind = event.kind
        late = now - max(due, self._timer_from.get(kind, due)) > self.config.late_tolerance
        if late:
            self.stats["late_timers"] += 1
            if now - self._late_at >= self.config.probe_interval * (self.health + 1):
                self._late_at = now  # one step of health per (scaled) probe period of lateness at most
                self._change_health(1)
        if kind is TimerKind.PROBE:
            self._probe_step(now, out, late)
        elif kind is TimerKind.SUSPICION:
            self._expire_suspicions(now, out, late)
        elif kind is TimerKind.RELAY:
            self._relay_deadlines(now, out)
        elif kind is TimerKind.GOSSIP:
            self._gossip_round(now, out)
        else:
            self._push_pull_round(now, out)

    def _on_received(self, event: ev.Received, now: float, out: list) -> None:
        self._on_message(event.peer, event.msg, now, out)

    def _on_message(self, peer: PeerId, msg: object, now: float, out: list) -> None:
        get = self.table.members.get
        sender = get(peer)
        if sender is not None:
            sender.last_seen = now
            sender.vouched = True
        kind = type(msg)
        self._sender = peer
        try:
            if kind is PushPull or kind is PushPullReply:
                self._on_push_pull(peer, msg, now, out)
            elif kind not in PIGGYBACKED:
                self.stats["unexpected_messages"] += 1  # the driver should not have fed it; drop
            else:
                self._on_piggybacked(peer, msg, now, out)
        finally:
            self._sender = None
        if sender is None and (sender := get(peer)) is not None:
            sender.vouched = True  # it introduced itself

    def _on_piggybacked(self, peer: PeerId, msg: Ping | Ack | PingReq | Nack | Gossip, now: float, out: list) -> None:
        kind = type(msg)
        self._merge(msg.updates, msg.capabilities, now, out)
        if kind is Ping:
            out.append(ev.Send(peer, Ack(msg.seq, *self._piggyback())))
        elif kind is Ack:
            self._on_ack(peer, msg.seq, now, out)
        elif kind is PingReq:
            self._on_ping_req(peer, msg, now, out)
        elif kind is Nack:
            probe = self._probe
            if probe is not None and probe.seq == msg.seq and peer in probe.relays:
                probe.nacks += 1

    # --- suspicion ----------------------------------------------------------------------

    def _suspicion_deadline(self, member: Member, now: float, restart: bool, out: list) -> None:
        if restart or member.suspicion is None:
            member.suspicion = Suspicion(now, now)
        confirmations = max(0, len(member.update.origins) - 1)
        deadline = member.suspicion.start + self.suspicion_timeout(confirmations)
        member.suspicion.deadline = deadline
        heapq.heappush(self._suspect_heap, (deadline, member.peer))
        self._arm_heap_timer(TimerKind.SUSPICION, deadline, out)

    def _expire_suspicions(self, now: float, out: list, late: bool = False) -> None:
        heap = self._suspect_heap
        deferred = []
        while heap and heap[0][0] <= now:
            deadline, peer = heapq.heappop(heap)
            member = self.table.get(peer)
            if member is None or member.suspicion is None or member.suspicion.deadline != deadline:
                continue  # refuted, confirmed sooner, or gone
            if late and not member.suspicion.deferred:
                # We slept past the deadline: a refutation may be waiting behind this timer.
                # Judge once the messages that arrived meanwhile are in (once per suspicion).
                member.suspicion.deferred = True
                member.suspicion.deadline = now + self._grace()
                deferred.append((member.suspicion.deadline, peer))
                self.stats["judgements_deferred"] += 1
                continue
            self.stats["deaths_declared"] += 1
            self._apply(Update(peer, DEAD, member.incarnation, (self.self_id,)), now, out)
        for entry in deferred:
            heapq.heappush(heap, entry)
        if heap:
            self._set_timer(TimerKind.SUSPICION, heap[0][0], out)

    # --- merging news ---------------------------------------------------------------------

    def _merge(self, updates: tuple, records: tuple, now: float, out: list, spread: bool = True) -> None:
        get = self.table.members.get
        for update in updates:
            known = get(update.peer)
            if known is not None:  # fast path: most piggybacked news is old news
                old = known.update
                if old is update or update.incarnation < old.incarnation:
                    continue
                if update.incarnation == old.incarnation and (
                    update.state < old.state
                    or (update.state == old.state and update.address <= old.address
                        and (update.state != SUSPECT or update.origins == old.origins))
                ):
                    continue  # older, or what ``join`` would fold into the fact we hold
            self._apply(update, now, out, spread)
        seen = self._seen_claims
        for claim in records:
            if claim not in seen:
                self._apply_record(claim, now, out, spread)

    def _apply(self, update: Update, now: float, out: list, spread: bool = True) -> None:
        """Merge one fact into the table; notify, time suspicions and re-broadcast what is new.

        ``spread=False`` merges without re-broadcasting: a joining peer's view
        of the table is old news to everybody else.
        """
        peer = update.peer
        member = None if peer == self.self_id else self.table.get(peer)
        held = self.incarnation if peer == self.self_id else (0 if member is None else member.incarnation)
        # A peer's word about itself, from itself, is its own business: only relayed news can be forged.
        if update.incarnation > held + self.config.max_incarnation_jump and self._sender != peer:
            self.stats["implausible_updates"] += 1  # forged: see MembershipConfig.max_incarnation_jump
            return
        if peer == self.self_id:
            self._about_self(update)
            return
        if member is None:
            self._add_member(update, now, out, spread)
            return
        old = member.update
        if old is update or update.rank < old.rank:
            return
        new = join(old, update)
        if new is old:
            return
        self.table.set_update(member, new)
        if new.rank == old.rank:
            # Same fact with more origins: news only if it adds a confirmation that counts.
            if new.state == SUSPECT:
                self._suspicion_deadline(member, now, False, out)
                cap = self.config.suspicion_confirmations + 1
                if spread and min(len(new.origins), cap) > min(len(old.origins), cap):
                    self._queue_update(new, refinement=True)  # no gossip round of its own
            return
        if new.state != old.state:
            member.since = now
            out.append(ev.MemberChanged(peer, old.state, new.state))
        if new.state == SUSPECT:
            if old.state != SUSPECT:
                self.stats["suspicions"] += 1
                if self.self_id not in new.origins:
                    self._maybe_confirm(peer)
            self._suspicion_deadline(member, now, True, out)
        else:
            member.suspicion = None
            if new.state == ALIVE:
                member.last_seen = now
        if spread:
            self._queue_update(new)

    def _add_member(self, update: Update, now: float, out: list, spread: bool) -> None:
        if not self._admit(update.peer, now):
            self.stats["new_members_refused"] += 1
            return
        if len(self.table) >= self.config.max_members and not self._make_room(now):
            self.stats["table_full"] += 1
            return
        update = normal(update)
        member = Member(update.peer, update, now, now if update.state == ALIVE else 0.0, update.address)
        member.vouched = self._sender is None  # exempt news: our join's replies from the seeds we chose
        orphan = self._orphans.pop(update.peer, None)
        if orphan is not None:
            member.record, member.claim = orphan
        self.table.add(member)
        if update.state == SUSPECT:
            self._suspicion_deadline(member, now, True, out)
        if member.live:
            out.append(ev.MemberChanged(update.peer, None, update.state))
        if spread:
            self._queue_update(update)

    def _about_self(self, update: Update) -> None:
        if update.state == ALIVE:
            if update.incarnation <= self.incarnation:
                return  # our own news coming back
        elif update.incarnation < self.incarnation:
            # An old suspicion, already refuted; but its holder missed the refutation (or dropped
            # it as an implausible jump when relayed): say it again, ourselves, at most once a period.
            if self._now - self._reasserted_at >= self.config.probe_interval:
                self._reasserted_at = self._now
                self.stats["reassertions"] += 1
                self._queue_update(self._self_update())
            return
        if update.incarnation >= MAX_INCARNATION:
            self.stats["implausible_updates"] += 1  # no refutation may overflow the wire bound
            return
        if update.state == SUSPECT:
            self._change_health(1)
        self.stats["refutations"] += 1
        self.incarnation = update.incarnation + 1
        self._queue_update(self._self_update())

    def _apply_record(self, claim: bytes, now: float, out: list, spread: bool = True) -> None:
        if claim in self._seen_claims:
            return
        try:
            record = self._verify(claim)
        except WireError:
            self.stats["bad_records"] += 1
            return
        self._remember_claim(claim)
        peer = record.peer_id
        if peer == self.self_id:
            return
        member = self.table.get(peer)
        if member is None:
            if len(self._orphans) < _MAX_ORPHANS:
                self._orphans[peer] = (record, claim)
            return
        if record.version <= member.version:
            return
        self.table.set_record(member, record, claim)
        out.append(ev.CapabilityChanged(peer, record))
        if spread:
            self._records.push(peer.raw, claim, len(claim) + 8)

    def _remember_claim(self, claim: bytes) -> None:
        seen = self._seen_claims
        if len(seen) >= _MAX_SEEN_CLAIMS:
            del seen[next(iter(seen))]
        seen[claim] = None

    def _admit(self, peer: PeerId, now: float) -> bool:
        """May the current sender teach us one more new member? A token bucket per sender.

        A peer's word about itself, our own join's replies and preloading are
        exempt; anyone else gets ``new_member_burst`` at once and
        ``new_member_rate`` per second after (sybil senders are bounded by the
        table's size and by the eviction of members nobody vouched for).
        """
        sender = self._sender
        if sender is None or sender == peer:
            return True
        cfg, buckets = self.config, self._buckets
        bucket = buckets.get(sender)
        if bucket is None:
            if len(buckets) >= _MAX_BUCKETS:
                del buckets[next(iter(buckets))]
            bucket = buckets[sender] = [float(cfg.new_member_burst), now]
        tokens = min(float(cfg.new_member_burst), bucket[0] + max(0.0, now - bucket[1]) * cfg.new_member_rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _make_room(self, now: float) -> bool:
        """Forget the longest-dead member, else a live one nobody vouched for; False if neither."""
        dead = [m for m in self.table.members.values() if not m.live]
        if dead:
            victim = min(dead, key=lambda m: m.since).peer
            self.table.remove(victim)
        else:
            victim = self.table.evict_hearsay()
            if victim is None:
                return False
            self.stats["hearsay_evicted"] += 1
        self._updates.discard(victim.raw)
        return True

    # --- timers -----------------------------------------------------------------------------------

    def _set_timer(self, kind: TimerKind, at: float, out: list) -> None:
        quantum = self.config.timer_quantum
        if quantum > 0:
            at = math.ceil(at / quantum - 1e-9) * quantum
        if self._timers.get(kind) == at:
            return
        self._timers[kind] = at
        self._timer_from[kind] = self._now
        out.append(ev.SetTimer(kind, at))

    def _arm_heap_timer(self, kind: TimerKind, earliest: float, out: list) -> None:
        current = self._timers.get(kind)
        if current is None or earliest < current:
            self._set_timer(kind, earliest, out)
