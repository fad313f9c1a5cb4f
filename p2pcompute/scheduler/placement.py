"""Which peers a ready task is offered to: a pure function of candidates, provider hints and the rng.

Theory of operation
-------------------
*Candidates* are capability records (``Candidate.from_record``): free slots,
cpus, memory, arch, labels, operator sets, wasm, load, and, for the oracle
only, the exact queue length. A peer *meets* a task's ``Requirements`` when
it has at least the cpus and memory, every label (the reserved label
``peer-id``, ``PEER_LABEL``, is met by the peer of that ID only: a task
pinned to one peer), the arch (if one is
named), operator set ``ops/v<opset>`` (if one is named) and wasm (if
needed). A task nobody meets gets a reason naming the first requirement no
peer offers and how many peers are known: ``no peer offers arch=arm64: 12
peers known`` (``unmet``; the CLI calls it at submit time, too).

*Sparrow* (the default). For a batch of m ``Dispatch``es with the same
requirements, probe d·m distinct peers drawn at random from those that meet
them (d = ``Dispatch.wanted``, 2 by default), kept in a heap by load
(reservations made in this batch plus the record's load, per free slot).
Each task is offered to the d least loaded probed peers, and to peers
holding part of its input (provider hints), ranked by load minus locality
(the share of the task's input bytes the peer holds, times
``locality_weight``), ties broken at random. If ``locality_weight`` > 0 and
peers with room hold at least ``holders_only_share`` of the task's input
bytes, only they are offered it: a second offer elsewhere would win the
race about half the time even when the holder is free. But a holder without
a free slot (by its record, less this batch's reservations) is passed over
while some probed peer still has one (``busy_holders_move``): a slot frees
at a busy 4-slot peer after a quarter of a task on average, several seconds,
while moving the input costs its bytes over the link, about a second; the
busy holder stays among the ranked peers, so it still wins if it frees
first. With every probed peer busy, too (a saturated network), nothing is
gained by moving: the task waits at its holders.
A peer takes at most ``free_slots + max_queued`` reservations, counting
those still outstanding from earlier batches (``reserved``: the caller's
offers not yet answered):
never more tasks on a peer than its free slots, a short queue of
reservations beyond them (its executor accepts only within its slots, so
the first reserved peer to have a free slot gets the task: late binding).
Peers a task failed on (``Dispatch.avoid``) are used only if no other peer
with room can run it. Probed peers full: any eligible peer with room.

*A lone peer*, the only candidate there is, takes every task it can run, within its budget too
(offers beyond what its executor queues would only be declined and offered again).

*Oracle* (for the simulation's comparison only: it knows every queue): each
task goes to the one peer with the least expected wait (queue plus tasks it
was given in this batch, minus free slots; any free slot means no wait),
then the one holding most of its input (so no input moves when a holder can
start it as soon), then the one with the most free slots.
*Random*: each task to one peer drawn uniformly among those that meet it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .events import Dispatch, Placed
from .model import Requirements

MODES = ("sparrow", "oracle", "random")
PEER_LABEL = "peer-id"   # Requirements.labels[PEER_LABEL] = a peer ID: only that peer meets the task


@dataclass(frozen=True, slots=True)
class Candidate:
    peer: Any
    free_slots: int
    cpus: float
    memory: int
    arch: str
    labels: dict[str, str] = field(default_factory=dict)
    opsets: tuple[str, ...] = ("ops/v1",)
    wasm: bool = True
    load: float = 0.0
    queue: int = 0             # tasks waiting at the peer: exact in the oracle's simulation, else 0

    @classmethod
    def from_record(cls, record: Any) -> Candidate:
        """From a gossip ``CapabilityRecord``."""
        return cls(record.peer_id, record.free_slots, record.cpus, record.memory, record.arch, dict(record.labels),
                   tuple(record.opsets), record.wasm, record.load)


def _checks(req: Requirements) -> list[tuple[str, Any]]:
    """(what a reason names, predicate on a Candidate) for each requirement the task states."""
    out: list[tuple[str, Any]] = []
    if req.arch is not None:
        out.append((f"arch={req.arch}", lambda c: c.arch == req.arch))
    for k, v in sorted(req.labels.items()):
        if k == PEER_LABEL:   # reserved: the peer itself (a task pinned to one peer, e.g. a parameter part's owner)
            out.append((f"peer {v}", lambda c, v=v: str(c.peer) == v))
        else:
            out.append((f"label {k}={v}", lambda c, k=k, v=v: c.labels.get(k) == v))
    if req.opset is not None:
        out.append((f"operator set ops/v{req.opset}", lambda c: f"ops/v{req.opset}" in c.opsets))
    if req.wasm:
        out.append(("wasm", lambda c: c.wasm))
    out.append((f"cpus>={req.cpus:g}", lambda c: c.cpus >= req.cpus))
    out.append((f"memory>={req.memory}", lambda c: c.memory >= req.memory))
    return out


def _key(r: Requirements) -> tuple:
    return (r.cpus, r.memory, tuple(sorted(r.labels.items())), r.arch, r.opset, r.wasm)


def meets(c: Candidate, req: Requirements) -> bool:
    return all(pred(c) for _, pred in _checks(req))


def unmet(req: Requirements, candidates: Iterable[Candidate]) -> str | None:
    """None if some candidate meets ``req``; else the reason, naming the requirement and the peers known."""
    cands = list(candidates)
    known = f"{len(cands)} peer{'s' if len(cands) != 1 else ''} known"
    if any(meets(c, req) for c in cands):
        return None
    checks = _checks(req)
    for what, pred in checks:
        if not any(pred(c) for c in cands):
            return f"no peer offers {what}: {known}"
    return f"no single peer offers {', '.join(w for w, _ in checks)}: {known}"


def unmet_plan(plan: Any, candidates: Iterable[Candidate]) -> list[str]:
    """For ``submit``: one line per stage whose tasks no known peer can run (``[]``: every task has a peer)."""
    cands, seen, out = list(candidates), set(), []
    for t in plan.tasks:
        key = (t.stage, _key(t.requirements))
        if key not in seen:
            seen.add(key)
            reason = unmet(t.requirements, cands)
            if reason:
                out.append(f"stage {t.stage}: {reason}")
    return out


@dataclass
class PlacementConfig:
    mode: str = "sparrow"
    locality_weight: float = 1.0    # score of holding all of a task's input bytes; load costs 1 per task per slot
    max_queued: int = 2             # reservations a peer may hold beyond its free slots, per batch
    holders_only_share: float = 0.5  # a task whose input bytes a peer with room holds this share of is offered
                                     # only to such peers (late binding among holders); above 1: off
    busy_holders_move: bool = True   # holders without a free slot are passed over when a probed peer has one


class Placement:
    """``place(dispatches, candidates, providers)`` -> one ``Placed`` per dispatch (peers may be empty)."""

    def __init__(self, rng: random.Random, config: PlacementConfig | None = None) -> None:
        self.rng = rng
        self.config = config or PlacementConfig()
        if self.config.mode not in MODES:
            raise ValueError(f"placement mode {self.config.mode!r}: use one of {', '.join(MODES)}")

    def place(self, dispatches: list[Dispatch], candidates: list[Candidate],
              providers: Mapping[str, Iterable[Any]] | None = None,
              reserved: Mapping[Any, int] | None = None) -> list[Placed]:
        """``providers``: CID -> peers known to hold it (DHT provider records); ``reserved``: peer ->
        reservations the caller holds there already (offers not yet answered), counted against its budget."""
        providers = providers or {}
        by_peer = {c.peer: c for c in candidates}
        used: dict[Any, int] = dict(reserved or {})   # reservations outstanding, and those made in this batch
        groups: dict[tuple, tuple[Requirements, list[Dispatch]]] = {}
        for d in dispatches:
            groups.setdefault(_key(d.requirements), (d.requirements, []))[1].append(d)
        placed: dict[tuple[str, str], Placed] = {}
        for req, ds in groups.values():
            eligible = [c for c in candidates if meets(c, req)]
            if not eligible:
                reason = unmet(req, candidates) or "no peer"
                for d in ds:
                    placed[d.job_id, d.task] = Placed(d.task, (), reason)
                continue
            batch = _Batch(self, eligible, by_peer, providers, used)
            if self.config.mode == "sparrow":
                wanted = max(1, max(d.wanted for d in ds))
                batch.probe(self.rng.sample(eligible, min(len(eligible), wanted * len(ds))))   # d·m, once
            for d in ds:
                placed[d.job_id, d.task] = batch.place(d)
        return [placed[d.job_id, d.task] for d in dispatches]

    def room(self, candidates: list[Candidate], reserved: Mapping[Any, int] | None = None) -> int:
        """How many more reservations ``place`` could make now (over every candidate's budget)."""
        if self.config.mode == "oracle":
            return 1 << 30
        reserved = reserved or {}
        return sum(max(0, c.free_slots + self.config.max_queued - reserved.get(c.peer, 0)) for c in candidates)

    def _budget(self, c: Candidate, used: dict) -> bool:
        if self.config.mode == "oracle":
            return True
        return used.get(c.peer, 0) < c.free_slots + self.config.max_queued

    @staticmethod
    def _held(d: Dispatch, by_peer: dict, providers: Mapping) -> dict[Any, float]:
        """Peer -> share of the task's known input bytes it holds (inputs of unknown size count 1 byte)."""
        sizes = [(cid, size if size else 1) for _, cid, size in d.inputs if cid]
        total = sum(s for _, s in sizes)
        held: dict[Any, float] = {}
        for cid, size in sizes:
            for p in providers.get(cid, ()):
                if p in by_peer:
                    held[p] = held.get(p, 0.0) + size / total
        return held


class _Batch:
    """One group of dispatches with the same requirements, placed one after another."""

    def __init__(self, pl: Placement, eligible: list[Candidate], by_peer: dict, providers: Mapping,
                 used: dict) -> None:
        self.pl, self.cfg, self.rng = pl, pl.config, pl.rng
        self.eligible, self.by_peer, self.providers, self.used = eligible, by_peer, providers, used
        self.names = {c.peer for c in eligible}
        self.heap: list[tuple[float, float, int]] = []     # (load when pushed, tie-break, index in probed)
        self.probed: list[Candidate] = []
        self.full = False                                  # no eligible peer has room left (it only shrinks)
        self.probed_free = 0                               # probed peers with a free slot left (only shrinks)
        self.probed_names: set = set()

    def probe(self, probed: list[Candidate]) -> None:
        self.probed = probed
        self.probed_names = {c.peer for c in probed}
        self.probed_free = sum(1 for c in probed if self.free(c))
        self.heap = [(self.load(c), self.rng.random(), i) for i, c in enumerate(probed)]
        heapq.heapify(self.heap)

    def room(self, c: Candidate) -> bool:
        return self.pl._budget(c, self.used)

    def free(self, c: Candidate) -> bool:
        """A free slot left at ``c`` by its record, after this batch's reservations."""
        return self.used.get(c.peer, 0) < c.free_slots

    def load(self, c: Candidate) -> float:
        return (self.used.get(c.peer, 0) + c.load) / max(1, c.free_slots)

    def place(self, d: Dispatch) -> Placed:
        held = Placement._held(d, self.by_peer, self.providers)
        mode, want = self.cfg.mode, max(1, d.wanted)
        chosen: list[Candidate] = []
        if mode == "sparrow":
            chosen = self._sparrow(d, held, want)
        if not chosen:
            room = [] if self.full else [c for c in self.eligible if self.room(c)]
            # peers that failed the task only when no other peer with room can run it
            pool = [c for c in room if c.peer not in d.avoid] or room
            if not pool:
                self.full = True
                return Placed(d.task, (), f"all {len(self.eligible)} peers that can run it are busy")
            if mode == "random":
                chosen = [self.rng.choice(pool)]
            elif mode == "oracle":
                chosen = [min(pool, key=self._oracle_key(held))]
            else:
                chosen = self._rank(pool, held)[:want]
        for c in chosen:
            was_free = self.free(c)
            self.used[c.peer] = self.used.get(c.peer, 0) + 1
            if was_free and not self.free(c) and c.peer in self.probed_names:
                self.probed_free -= 1
        return Placed(d.task, tuple(c.peer for c in chosen))

    def _oracle_key(self, held: dict) -> Any:
        """Least tasks ahead (any free slot counts as none), then the share of the input held, then the most
        free slots: the shortest wait, and no input moved when a holder can start it as soon."""
        def key(c: Candidate) -> tuple:
            ahead = c.queue + self.used.get(c.peer, 0) - c.free_slots
            return (max(ahead, -1), -held.get(c.peer, 0.0), ahead, self.rng.random())
        return key

    def _rank(self, cs: list[Candidate], held: dict) -> list[Candidate]:
        w = self.cfg.locality_weight
        return sorted(cs, key=lambda c: (self.load(c) - w * held.get(c.peer, 0.0), self.rng.random()))

    def _sparrow(self, d: Dispatch, held: dict, want: int) -> list[Candidate]:
        """Holders of most of the input with room, else the least loaded probed peers (and partial holders)."""
        near = [self.by_peer[p] for p in held if p in self.names and self.room(self.by_peer[p])
                and p not in d.avoid]
        if self.cfg.locality_weight > 0:
            holders = [c for c in near if held[c.peer] >= self.cfg.holders_only_share]
            if holders and self.cfg.busy_holders_move and self.probed_free > 0:
                holders = [c for c in holders if self.free(c)]     # busy holders: move the input instead
            if holders:
                return self._rank(holders, held)[:want]
        picked, aside = [], []
        while self.heap and len(picked) < want:
            entry = heapq.heappop(self.heap)
            c = self.probed[entry[2]]
            if not self.room(c):
                continue                                   # room only shrinks within a batch
            now = self.load(c)
            if now > entry[0]:
                heapq.heappush(self.heap, (now, entry[1], entry[2]))     # placed on since: re-sort it
            elif c.peer in d.avoid:
                aside.append(entry)
            else:
                picked.append(entry)
        for entry in picked + aside:
            heapq.heappush(self.heap, entry)               # its load is refreshed when next popped
        seen = {self.probed[e[2]].peer for e in picked}
        return self._rank([self.probed[e[2]] for e in picked] + [c for c in near if c.peer not in seen], held)[:want]
