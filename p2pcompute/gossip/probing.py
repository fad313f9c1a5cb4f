"""Probing for the membership machine: pings, indirect probes through relays, local health.

Theory of operation
-------------------
One probe at a time. ``_start_probe`` pings the next member (round-robin)
and arms the PROBE timer for the direct timeout; at that timer
``_go_indirect`` sends ``PingReq`` to alive relays and re-arms it for the end
of the period; at the end ``_probe_failed`` suspects the target unless an
ack came (from the target, or forwarded by a relay). A failed probe of a
member already suspected is a confirmation: it goes straight to the earlier
suspecters too, whose timers started first (Lifeguard's shrinking timeout
pays off only if they hear of it). Health (Lifeguard LHM)
moves here: −1 per successful probe, + the number of missed nacks (or +1
without relays) per failed one. Timeout and period are scaled by health+1.
A phase whose timer fired late (our loop was starved) is put off once by a
grace period (``_grace``) before it moves on, so a late ack still counts.

As a relay, the peer pings the target with its own seq, forwards the ack, and
sends a ``Nack`` at the deadline the requester gave (a share of its window),
so the nack arrives before the requester decides. Relayed probes sit in a
bounded dict; their deadlines in a heap behind a single RELAY timer.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from ..node.identity import PeerId
from . import events as ev
from .events import TimerKind
from .messages import ALIVE, MAX_PIGGYBACK, SUSPECT, Ack, Gossip, Nack, Ping, PingReq, Update


@dataclass(slots=True)
class _Probe:
    seq: int
    target: PeerId
    period_end: float
    indirect: bool = False
    relays: tuple[PeerId, ...] = ()
    nacks: int = 0
    acked: bool = False
    graced: int = 0  # bits: the direct (1) and indirect (2) phase were put off for our own lateness


@dataclass(slots=True)
class _Relay:
    requester: PeerId
    seq: int  # the requester's probe seq
    timeout: float


class ProbingMixin:
    """The probing half of ``Membership`` (see the module docstring).

    It works on the state that ``Membership.__init__`` sets up; it is not used alone.
    """

    def _probe_step(self, now: float, out: list, late: bool = False) -> None:
        probe = self._probe
        if probe is None or probe.acked:
            self._start_probe(now, out)
        elif late and not probe.graced & (2 if probe.indirect else 1):
            # Our timer fired late: the ack may be waiting behind it. Give the messages that
            # arrived meanwhile their turn before moving on, once per phase; the probe's
            # windows exclude our own delay.
            probe.graced |= 2 if probe.indirect else 1
            grace = self._grace()
            probe.period_end = max(probe.period_end, now) + grace
            self.stats["judgements_deferred"] += 1
            self._set_timer(TimerKind.PROBE, now + grace, out)
        elif not probe.indirect:
            self._go_indirect(probe, now, out)
        else:
            self._probe_failed(probe, now, out)
            self._start_probe(now, out)

    def _maybe_confirm(self, suspect: PeerId) -> None:
        """Heard of a new suspicion: with probability confirm_probers / N, probe the suspect next."""
        share = self.config.confirm_probers / max(1, self.size - 1)
        if share > 0 and len(self._probe_next) < 4 and self._rng.random() < share:
            self._probe_next.append(suspect)
            self.stats["confirm_probes"] += 1

    def _next_target(self) -> PeerId | None:
        while self._probe_next:
            member = self.table.get(self._probe_next.pop(0))
            if member is not None and member.state == SUSPECT:
                return member.peer
        return self.table.next_probe()

    def _start_probe(self, now: float, out: list) -> None:
        cfg, scale = self.config, self.health + 1
        target = self._next_target()
        if target is None:
            self._probe = None
            self._set_timer(TimerKind.PROBE, now + cfg.probe_interval * scale, out)
            return
        self._seq += 1
        self._probe = _Probe(self._seq, target, now + cfg.probe_interval * scale)
        self.stats["probes"] += 1
        updates, records = self._piggyback()
        member = self.table.members[target]
        if member.state == SUSPECT and member.update not in updates:
            updates = (member.update, *updates[: MAX_PIGGYBACK - 1])  # tell it, so it can refute
        out.append(ev.Send(target, Ping(self._seq, updates, records)))
        self._set_timer(TimerKind.PROBE, now + cfg.probe_timeout * scale, out)

    def _go_indirect(self, probe: _Probe, now: float, out: list) -> None:
        probe.indirect = True
        wanted = self.config.indirect_probes
        picked = self.table.sample(wanted + 2, exclude=(probe.target,), first_hand=True)
        members = self.table.members
        probe.relays = tuple(p for p in picked if members[p].state == ALIVE)[:wanted]
        window = max(0.0, probe.period_end - now) * self.config.nack_fraction
        for relay in probe.relays:
            out.append(ev.Send(relay, PingReq(probe.seq, probe.target, window, *self._piggyback())))
        self.stats["indirect_probes"] += 1
        self._set_timer(TimerKind.PROBE, probe.period_end, out)

    def _probe_failed(self, probe: _Probe, now: float, out: list) -> None:
        self.stats["probe_failures"] += 1
        missed = len(probe.relays) - probe.nacks
        self._change_health(missed if probe.relays else 1)
        self.stats["missed_nacks"] += max(0, missed)
        member = self.table.get(probe.target)
        if member is None or not member.live:
            return
        earlier = member.update.origins if member.state == SUSPECT else ()
        self._apply(Update(member.peer, SUSPECT, member.incarnation, (self.self_id,)), now, out)
        # We confirm others' suspicion: tell the earliest suspecters directly, so
        # their timers (which started first) shrink now rather than when
        # piggybacks happen to reach them.
        confirmed = Gossip(updates=(member.update,))
        for origin in earlier[: self.config.suspicion_confirmations]:
            if origin != self.self_id:
                out.append(ev.Send(origin, confirmed))

    def _on_ack(self, peer: PeerId, seq: int, now: float, out: list) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq and not probe.acked:
            if peer == probe.target or peer in probe.relays:
                probe.acked = True
                self._change_health(-1)
                target = self.table.get(probe.target)
                if target is not None:
                    target.last_seen = now
                self._set_timer(TimerKind.PROBE, probe.period_end, out)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            out.append(ev.Send(relay.requester, Ack(relay.seq, *self._piggyback())))

    def _on_ping_req(self, peer: PeerId, msg: PingReq, now: float, out: list) -> None:
        if len(self._relays) >= self.config.max_relays or msg.target == self.self_id:
            return  # overloaded: the requester counts our missing nack against its own health
        target = self.table.get(msg.target)
        if target is None or not target.live or sum(r.requester == peer for r in self._relays.values()) >= 4:
            self.stats["ping_reqs_refused"] += 1  # we ping only members we know, a few at a time per requester
            return
        self._seq += 1
        self._relays[self._seq] = _Relay(peer, msg.seq, msg.timeout)
        heapq.heappush(self._relay_heap, (now + msg.timeout, self._seq, False))
        self._arm_heap_timer(TimerKind.RELAY, self._relay_heap[0][0], out)
        out.append(ev.Send(msg.target, Ping(self._seq, *self._piggyback())))

    def _relay_deadlines(self, now: float, out: list) -> None:
        heap = self._relay_heap
        while heap and heap[0][0] <= now:
            _, seq, expire = heapq.heappop(heap)
            relay = self._relays.get(seq)
            if relay is None:
                continue
            if expire:
                del self._relays[seq]
            else:
                out.append(ev.Send(relay.requester, Nack(relay.seq, *self._piggyback())))
                heapq.heappush(heap, (now + relay.timeout, seq, True))  # forward a late ack meanwhile
        if heap:
            self._set_timer(TimerKind.RELAY, heap[0][0], out)

    def _grace(self) -> float:
        """How long a judgement waits after a late timer: a direct probe timeout at current health."""
        return self.config.probe_timeout * (self.health + 1)

    def _change_health(self, delta: int) -> None:
        self.health = min(self.config.max_health - 1, max(0, self.health + delta))
