"""The member table: what this peer believes about every other, and the merge rule.

Theory of operation
-------------------
Each member is described by its latest ``Update`` (state, incarnation,
origins, address). Facts merge by ``join``, a lattice join: the fact with the
higher ``(incarnation, state)`` wins (alive < suspect < dead < left at equal
incarnation, so only the member itself, by raising its incarnation, can
overturn a suspicion or a death), and facts of equal rank combine their
origins (the smallest ``MAX_ORIGINS`` IDs of the union) and keep the greater
address. Because ``join`` is commutative, associative and idempotent, peers
that saw the same facts in any order and any number of times agree.

The table also keeps what sampling needs in O(1): ``live`` is a list of the
alive and suspect members (swap-remove on exit) for random choices, and
``next_probe`` walks a shuffled copy of it, round-robin, reshuffling after
each full round (SWIM's randomized round-robin: every member is probed once
per round, in an order nobody can predict). Members that join mid-round are
placed at a random position in the rest of the round.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..node.identity import PeerId
from .capability import CapabilityRecord
from .messages import MAX_ORIGINS, SUSPECT, Update


def normal(u: Update) -> Update:
    """``u`` with origins only on a suspicion, sorted, unique and at most ``MAX_ORIGINS``."""
    o = u.origins
    if u.state != SUSPECT:
        return u if not o else Update(u.peer, u.state, u.incarnation, (), u.address)
    if all(o[i] < o[i + 1] for i in range(len(o) - 1)):
        return u
    return Update(u.peer, u.state, u.incarnation, tuple(sorted(set(o))[:MAX_ORIGINS]), u.address)


def join(a: Update, b: Update) -> Update:
    """The lattice join of two facts about the same peer (see module docstring)."""
    if a.rank != b.rank:
        return normal(a if a.rank > b.rank else b)
    if a.origins == b.origins and a.address == b.address:
        return normal(a)
    origins = tuple(sorted(set(a.origins) | set(b.origins))[:MAX_ORIGINS]) if a.state == SUSPECT else ()
    address = max(a.address, b.address)
    for known in (a, b):
        if known.origins == origins and known.address == address:
            return known
    return Update(a.peer, a.state, a.incarnation, origins, address)


@dataclass(slots=True)
class Suspicion:
    """A running suspicion: when it started and when it expires (shrinks with confirmations)."""

    start: float
    deadline: float
    deferred: bool = False  # its expiry was put off once because our own timer fired late


@dataclass(slots=True)
class Member:
    peer: PeerId
    update: Update
    since: float  # local time it entered its current state
    last_seen: float  # local time we last had news of it being alive
    address: str = ""
    record: CapabilityRecord | None = None
    claim: bytes = b""
    suspicion: Suspicion | None = None
    slot: int = -1  # its index in ``Table.live``, -1 when not live (kept by the table)
    vouched: bool = False  # we heard from it first-hand (a message it sent us), not only of it

    @property
    def state(self) -> int:
        return self.update.state

    @property
    def incarnation(self) -> int:
        return self.update.incarnation

    @property
    def live(self) -> bool:
        return self.update.state <= SUSPECT

    @property
    def version(self) -> int:
        return -1 if self.record is None else self.record.version


_INDEXES: list[int] = []  # shared int objects, grown on demand: an index into live costs no int of its own


def _index(i: int) -> int:
    pool = _INDEXES
    if i >= len(pool):
        pool.extend(range(len(pool), max(2 * len(pool), i + 1, 256)))
    return pool[i]


class Table:
    """Members by peer ID, plus the live list for sampling and the probe order."""

    def __init__(self, rng: random.Random) -> None:
        # One entry per member and nothing else kept per member beyond ``live`` and its index:
        # a simulation holds N² of these (10,000 peers: 10⁸), so every per-member byte counts.
        self.members: dict[PeerId, Member] = {}
        self.live: list[PeerId] = []  # members[p].slot is p's index here
        self._order: list[PeerId] = []
        self._cursor = 0
        self._rng = rng

    def __len__(self) -> int:
        return len(self.members)

    def get(self, peer: PeerId) -> Member | None:
        return self.members.get(peer)

    def add(self, member: Member) -> None:
        self.members[member.peer] = member
        if member.live:
            self._enter_live(member)

    def add_all(self, members: list[Member]) -> None:
        """``add`` each of ``members`` (distinct, none held yet), in order: the same table and the
        same draws from the rng as one ``add`` at a time, with less overhead per member."""
        if len({m.peer for m in members}) != len(members) or any(m.peer in self.members for m in members):
            raise ValueError("add_all takes distinct members that are not held yet")
        table, live, order, rng = self.members, self.live, self._order, self._rng
        cursor = self._cursor
        # randint(cursor, n) is cursor + _randbelow(n - cursor + 1) (random.py); the same draws
        below = rng._randbelow if type(rng) is random.Random else (lambda n: rng.randint(0, n - 1))
        for member in members:
            peer = member.peer
            table[peer] = member
            if not member.live or member.slot >= 0:
                continue
            member.slot = _index(len(live))
            live.append(peer)
            n = len(order)
            spot = cursor + below(n - cursor + 1)
            if spot == n:
                order.append(peer)
            else:
                order.append(order[spot])
                order[spot] = peer

    def remove(self, peer: PeerId) -> None:
        member = self.members.pop(peer, None)
        if member is not None:
            self._leave_live(member)

    def set_update(self, member: Member, update: Update) -> None:
        """Replace a member's fact, keeping the live list in step."""
        was_live = member.live
        member.update = update
        if update.address:
            member.address = update.address
        if member.live and not was_live:
            self._enter_live(member)
        elif was_live and not member.live:
            self._leave_live(member)

    def set_record(self, member: Member, record: CapabilityRecord, claim: bytes) -> None:
        member.record, member.claim = record, claim

    def sample(self, k: int, exclude: tuple[PeerId, ...] = (), *, first_hand: bool = False) -> list[PeerId]:
        """Up to ``k`` distinct random live members, none in ``exclude``.

        ``first_hand``: only members we heard from ourselves (``vouched``). When
        gossip flooded the table with members nobody vouched for, a bounded
        number of extra draws finds what it can, so the cost stays O(k).
        """
        live = self.live
        want = min(k, len(live))
        if want <= 0:
            return []
        if not exclude and not first_hand:
            return self._rng.sample(live, want)
        picked = self._rng.sample(live, min(len(live), want + len(exclude)))
        members = self.members
        found = [p for p in picked if p not in exclude and (not first_hand or members[p].vouched)][:want]
        if first_hand and len(found) < want:
            for _ in range(4 * k + 8):
                p = self._rng.choice(live)
                if members[p].vouched and p not in exclude and p not in found:
                    found.append(p)
                    if len(found) == want:
                        break
        return found

    def evict_hearsay(self) -> PeerId | None:
        """Forget a random live member nobody vouched for (bounded draws); None if none was found."""
        live = self.live
        for _ in range(min(32, len(live))):
            peer = self._rng.choice(live)
            if not self.members[peer].vouched:
                self.remove(peer)
                return peer
        return None

    def next_probe(self) -> PeerId | None:
        """The next live member in randomized round-robin order, or None."""
        members = self.members
        for _ in range(2):
            while self._cursor < len(self._order):
                peer = self._order[self._cursor]
                self._cursor += 1
                member = members.get(peer)
                if member is not None and member.slot >= 0:
                    return peer
            self._order = list(self.live)
            self._rng.shuffle(self._order)
            self._cursor = 0
        return None

    def _enter_live(self, member: Member) -> None:
        if member.slot >= 0:
            return
        peer = member.peer
        member.slot = _index(len(self.live))
        self.live.append(peer)
        # Place it at a random spot in what is left of this probe round.
        order = self._order
        spot = self._rng.randint(self._cursor, len(order))
        if spot == len(order):
            order.append(peer)
        else:
            order.append(order[spot])
            order[spot] = peer

    def _leave_live(self, member: Member) -> None:
        i = member.slot
        if i < 0:
            return
        member.slot = -1
        last = self.live.pop()
        if last != member.peer:
            self.live[i] = last
            self.members[last].slot = i

