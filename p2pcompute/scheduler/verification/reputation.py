"""A coordinator's ledger of peers: valid, invalid and timed-out results, trust for ``adaptive``, bans.

Theory of operation
-------------------
One ``PeerRecord`` per peer the coordinator has verified results of. A
*verified* valid result (one that agreed with others, passed a check, or
matched a trusted re-execution: ``Accept.verified``) adds to ``valid`` and to
``consecutive``; an *invalid* one (outvoted, not proven) adds to ``invalid``
and resets ``consecutive`` to 0, as BOINC's adaptive replication does; a
*timeout* is counted but leaves ``consecutive`` alone (an honest peer's
machine may go to sleep). A peer is trusted (*vetted*: ``is_trusted``) with at
least ``threshold`` consecutive valid results and no ban. Only an *anchored*
acceptance (``Accept.anchored``: the result matched a trusted execution, a
passed check or a vetted peer) credits; two peers agreeing with each other
credit nobody. ``endorse`` takes credits from other coordinators' anchored
acceptances, but only those anchored by this peer itself or a peer this
ledger vetted: vetting spreads through the network's work without any
coordinator's word alone vetting a peer. A *proven* wrong result
(a trusted re-execution or a check showed it; or an accusation this peer
judged, accusation.py) bans the peer: it is never trusted nor chosen again
by this coordinator, and ``ban`` says whether the ban is new (so that the
driver re-verifies the peer's accepted results in running jobs and spreads
the accusation once).

Memory is bounded: at most ``max_peers`` records (the least recently touched
is forgotten first: it starts again untrusted, which is safe) and at most
``max_bans`` bans (the oldest is forgotten first). Pure: ``now`` is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Iterable

from .engine import Accept, Command, Outcome, Reject

MAX_REASON = 512


@dataclass
class PeerRecord:
    valid: int = 0
    invalid: int = 0
    timed_out: int = 0
    consecutive: int = 0
    last: float = 0.0


@dataclass(frozen=True)
class Ban:
    at: float
    reason: str


class Ledger:
    def __init__(self, threshold: int = 10, max_peers: int = 10_000, max_bans: int = 10_000) -> None:
        if threshold < 1 or max_peers < 1 or max_bans < 1:
            raise ValueError("threshold, max_peers and max_bans are at least 1")
        self.threshold = threshold
        self.max_peers = max_peers
        self.max_bans = max_bans
        self.peers: OrderedDict[Hashable, PeerRecord] = OrderedDict()
        self.bans: OrderedDict[Hashable, Ban] = OrderedDict()
        self.forgotten = 0

    # --- what happened ---------------------------------------------------------------------------

    def valid(self, peer: Hashable, now: float) -> None:
        r = self._touch(peer, now)
        r.valid += 1
        r.consecutive += 1

    def invalid(self, peer: Hashable, now: float) -> None:
        r = self._touch(peer, now)
        r.invalid += 1
        r.consecutive = 0

    def timed_out(self, peer: Hashable, now: float) -> None:
        self._touch(peer, now).timed_out += 1

    def ban(self, peer: Hashable, reason: str, now: float) -> bool:
        """Ban ``peer`` for a proven wrong result (counted as invalid each time); True if the ban is new."""
        r = self._touch(peer, now)
        r.invalid += 1
        r.consecutive = 0
        if peer in self.bans:
            return False
        self.bans[peer] = Ban(now, str(reason)[:MAX_REASON])
        while len(self.bans) > self.max_bans:
            self.bans.popitem(last=False)
        return True

    def learn(self, results: list[Outcome], commands: Iterable[Command], now: float) -> list[Hashable]:
        """Record what a task's verification decided (engine commands); the peers newly banned. Only an
        anchored acceptance credits its peers: agreeing with each other is what colluders do too."""
        banned = []
        for cmd in commands:
            if isinstance(cmd, Accept) and cmd.verified and cmd.anchored:
                for i in cmd.agreeing:
                    if not results[i].trusted:
                        self.valid(results[i].peer, now)
            elif isinstance(cmd, Reject):
                if cmd.proven:
                    if self.ban(cmd.peer, cmd.reason, now):
                        banned.append(cmd.peer)
                else:
                    self.invalid(cmd.peer, now)
        return banned

    # --- what the coordinator asks ---------------------------------------------------------------

    def endorse(self, anchor: Hashable, peers: Iterable[Hashable], now: float, mine: bool = False) -> int:
        """Another coordinator accepted a result of ``peers`` that matched ``anchor``'s (its trusted
        re-execution, or a peer it vetted): credit them here only if ``anchor`` is this peer itself
        (``mine``) or a peer this ledger vetted, so that no coordinator's word alone vets anyone. The
        number of peers credited."""
        if not (mine or self.is_trusted(anchor)):
            return 0
        n = 0
        for p in peers:
            if p != anchor and p not in self.bans:
                self.valid(p, now)
                n += 1
        return n

    def banned(self, peer: Hashable) -> bool:
        return peer in self.bans

    def is_trusted(self, peer: Hashable, threshold: int | None = None) -> bool:
        """Vetted: at least ``threshold`` (the ledger's by default) consecutive valid results, never banned."""
        r = self.peers.get(peer)
        return r is not None and r.consecutive >= (threshold or self.threshold) and peer not in self.bans

    def vetted(self, threshold: int | None = None) -> list[Hashable]:
        """The peers ``is_trusted`` (a scan of at most ``max_peers`` records: for an escalation, not per event)."""
        t = threshold or self.threshold
        return [p for p, r in self.peers.items() if r.consecutive >= t and p not in self.bans]

    def record(self, peer: Hashable) -> PeerRecord | None:
        return self.peers.get(peer)

    def _touch(self, peer: Hashable, now: float) -> PeerRecord:
        r = self.peers.get(peer)
        if r is None:
            r = self.peers[peer] = PeerRecord()
            while len(self.peers) > self.max_peers:
                self.peers.popitem(last=False)
                self.forgotten += 1
        else:
            self.peers.move_to_end(peer)
        r.last = max(r.last, now)
        return r
