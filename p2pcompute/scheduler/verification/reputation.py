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
    def __init__(self, threshold: int = 10, max_peers: int = 10_000, max_bans: int = 10_000,
                 vouch: int = 3) -> None:
        if threshold < 1 or max_peers < 1 or max_bans < 1 or vouch < 1:
            raise ValueError("threshold, max_peers, max_bans and vouch are at least 1")
        self.threshold = threshold
        self.vouch = vouch
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

    def endorse(self, anchor: Hashable, peers: Iterable[Hashable], now: float, me: Hashable = None) -> int:
        """Another coordinator accepted one result agreed on by ``anchor`` (its trusted re-execution, or a peer
        it vetted) and ``peers``. This ledger credits the others of that group only when one of the group is
        someone it vouches for itself: this peer (``me``: its own result was among them) or a peer with
        ``vouch`` valid results in a row here (fewer than ``threshold``: vouching says only that the group
        computed what a peer with a clean record computed; it takes many such credits to be vetted).
        So no coordinator's word alone vets anyone: a result matching one this peer trusts is what counts,
        wherever it was compared. The number of peers credited."""
        group = [anchor, *peers]
        if not any(p == me or self.is_trusted(p, self.vouch) for p in group):
            return 0
        n = 0
        for p in dict.fromkeys(group):
            if p != me and p is not None and p not in self.bans:
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

    def crew(self, k: int, threshold: int | None = None) -> list[Hashable]:
        """Whom a coordinator gives an anchored task's first execution to: its vetted peers and, while they
        are fewer than ``k``, the peers it is nearest to vetting (at least one valid result in a row), to
        make ``k``. A scan of the records."""
        t = threshold or self.threshold
        vetted = [p for p, r in self.peers.items() if r.consecutive >= t and p not in self.bans]
        if len(vetted) >= k:
            return vetted
        warm = [(r.consecutive, i, p) for i, (p, r) in enumerate(self.peers.items())
                if 0 < r.consecutive < t and p not in self.bans]
        return vetted + [p for _, _, p in sorted(warm, reverse=True)[:k - len(vetted)]]

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
