"""Dissemination for the membership machine: piggybacks, gossip rounds, push-pull.

Theory of operation
-------------------
News waits in two ``BroadcastQueue``s (membership updates first, then
capability records) and is drawn into every outgoing message, each item
about λ·log10(N+1) times. The GOSSIP timer is armed only while some
membership update has been sent fewer than ``gossip_fresh`` times: then
every ``gossip_interval`` a ``Gossip`` goes to ``gossip_fanout`` random
members; older items ride only on probe traffic, which costs no extra
messages. Capability records alone start no rounds (``gossip_capabilities``):
they change often and are advisory, so they ride probes, push-pull and the
rounds that membership news starts.

Push-pull anti-entropy exchanges whole tables (and capability versions, then
the missing records) with a random member — or a recently dead one, so a
peer wrongly declared dead hears of it and refutes — every
``push_pull_period(N)``. Joining is push-pull too: with a seed, then with one
more member (a seed may itself be new), retried every ``join_retry`` until
both answered; a joiner does not re-gossip what it learns (old news), an
established peer gossips whatever a push-pull taught it (news that
dissemination missed). Dead and left members are forgotten after
``dead_retention``.
"""

from __future__ import annotations

from ..node.identity import PeerId
from . import events as ev
from .events import TimerKind
from .messages import ALIVE, DEAD, MAX_PIGGYBACK, Gossip, PushPull, PushPullReply, Update

_PUSH_PULL_RECORD_BYTES = 256 * 1024


class DisseminationMixin:
    """The dissemination half of ``Membership`` (see the module docstring).

    It works on the state that ``Membership.__init__`` sets up; it is not used alone.
    """

    def _self_update(self) -> Update:
        return Update(self.self_id, ALIVE, self.incarnation, (), self.address)

    def _queue_update(self, update: Update, refinement: bool = False) -> None:
        """Queue news. A refinement rides the original's remaining transmits, or only probe traffic."""
        size = 56 + 40 * len(update.origins) + len(update.address)
        refine = self.config.gossip_fresh if refinement else None
        self._updates.push(update.peer.raw, update, size, refine)

    def _piggyback(self) -> tuple[tuple, tuple]:
        if not (self._updates.queued or self._records.queued):
            return (), ()  # the usual case in a quiet network: nothing to carry
        cfg = self.config
        limit = self._limit()
        updates, used = self._updates.take(cfg.max_piggyback_bytes, limit, cfg.max_piggyback_items)
        records: list = []
        if len(self._records) and used < cfg.max_piggyback_bytes:
            records, _ = self._records.take(cfg.max_piggyback_bytes - used, limit, cfg.max_piggyback_items)
        return tuple(updates), tuple(records)

    def _has_news(self) -> bool:
        """Is anything queued that dedicated gossip rounds should still carry?"""
        if not (self._updates.queued or self._records.queued):
            return False
        fresh = self.config.gossip_fresh or self._limit()
        if self._updates.has_fresh(fresh):
            return True
        # capability records (load, free slots) change often and are advisory: they ride
        # probe traffic, push-pull and rounds that membership news starts anyway
        return self.config.gossip_capabilities and self._records.has_fresh(fresh)

    def _limit(self) -> int:
        """The retransmit limit for the current N (memoised: N changes rarely)."""
        n = self.size
        if n != self._limit_n:
            self._limit_n, self._limit_value = n, self.config.retransmit_limit(n)
        return self._limit_value

    def _gossip_round(self, now: float, out: list) -> None:
        """Fan out to a few members. The timer is armed only while there is news (see handle)."""
        if not self._has_news():
            return
        for peer in self.table.sample(self.config.gossip_fanout, first_hand=True):
            updates, records = self._piggyback()
            if not updates and not records:
                break
            out.append(ev.Send(peer, Gossip(updates, records)))

    # --- anti-entropy -------------------------------------------------------------------------

    def _push_pull_delay(self) -> float:
        if self._joining:
            return min(self.config.join_retry, self.config.push_pull_interval)
        return self.config.push_pull_period(self.size) * self._rng.uniform(0.5, 1.0)

    def _push_pull_round(self, now: float, out: list) -> None:
        dead = self._reap(now)
        if self._joining:
            target: PeerId | None = self._join_target()
        else:
            target = self._push_pull_target(dead)
        if target is not None:
            out.append(ev.Send(target, self._push_pull(PushPull, join=self._joining)))
        self._set_timer(TimerKind.PUSH_PULL, now + self._push_pull_delay(), out)

    def _join_target(self) -> PeerId:
        if self._join_replies:
            others = self.table.sample(1, exclude=tuple(self._join_replies))
            if others:
                return others[0]
        return self._rng.choice(self._seeds)

    def _push_pull_target(self, dead: list[PeerId]) -> PeerId | None:
        """A random live or dead member we heard from first-hand: a peer wrongly declared dead
        hears of it and refutes (members only heard of are dialled by probes alone, one a period)."""
        live = self.table.live
        total = len(live) + len(dead)
        if total == 0:
            return None
        i = self._rng.randrange(total)
        peer = live[i] if i < len(live) else dead[i - len(live)]
        if self.table.members[peer].vouched:
            return peer
        found = self.table.sample(1, first_hand=True)
        return found[0] if found else None

    def _on_push_pull(self, peer: PeerId, msg: PushPull | PushPullReply, now: float, out: list) -> None:
        # A joining peer keeps what it learns to itself (all old news to the
        # network); an established peer spreads whatever is new to it, which
        # is what dissemination missed. A snapshot starts with its sender,
        # whose word on itself is news either way. Our own join's replies come
        # from seeds we chose: exempt from the rate of new members (_admit).
        spread = not self._joining
        if self._joining and isinstance(msg, PushPullReply):
            self._sender = None
        own = msg.members[:1]
        if own and own[0].peer == peer:
            self._merge(own, (), now, out)
        self._merge(msg.members, (), now, out, spread)
        if isinstance(msg, PushPullReply):
            self._merge((), msg.capabilities, now, out, spread)
            if self._joining:
                # A seed may itself be new and know little: catch up with one more member.
                self._join_replies.append(peer)
                self._joining = len(self._join_replies) < 2
        theirs = dict(msg.versions)
        missing = self._records_newer_than(theirs)
        if isinstance(msg, PushPull):
            out.append(ev.Send(peer, self._push_pull(PushPullReply, capabilities=missing)))
        elif missing:
            out.append(ev.Send(peer, Gossip(capabilities=missing[:MAX_PIGGYBACK])))

    def _push_pull(self, kind: type, **extra) -> PushPull | PushPullReply:
        """Our table (ourselves first) and capability versions, at most ``max_push_pull_entries``.

        A bigger table is sampled at random, so successive exchanges cover it all.
        """
        members = self.table.members
        cap = self.config.max_push_pull_entries - 1
        own = ((self.self_id, self.record.version),) if self.record is not None else ()
        chosen = members.values()
        if len(members) > cap:
            chosen = [members[p] for p in self._rng.sample(list(members), cap)]
        facts = tuple([m.update for m in chosen])
        versions = own + tuple([m.record.pair for m in chosen if m.record is not None])
        return kind(members=(self._self_update(), *facts), versions=versions, **extra)

    def _records_newer_than(self, theirs: dict[PeerId, int]) -> tuple[bytes, ...]:
        """Our records that ``theirs`` (peer -> version) lacks or holds older, in table order."""
        found, total = [], 0
        if self.record is not None and self.record.version > theirs.get(self.self_id, -1):
            found.append(self._claim)
            total += len(self._claim)
        known = theirs.get
        for peer, member in self.table.members.items():
            record = member.record
            if record is not None and record.version > known(peer, -1):
                claim = member.claim
                if total + len(claim) <= _PUSH_PULL_RECORD_BYTES:
                    found.append(claim)
                    total += len(claim)
        return tuple(found)

    def _reap(self, now: float) -> list[PeerId]:
        """Forget members dead or gone for longer than ``dead_retention``; return the dead ones kept."""
        cutoff = now - self.config.dead_retention
        stale, dead = [], []
        for m in self.table.members.values():
            if not m.live:
                if m.since < cutoff:
                    stale.append(m.peer)
                elif m.state == DEAD:
                    dead.append(m.peer)
        for peer in stale:
            self.table.remove(peer)
            self._updates.discard(peer.raw)
        return dead
