"""The training coordinator: a pure state machine (event + now in, commands out).

Theory of operation
-------------------
Training data is cut into ``shards``; a *round* asks for one update per
shard. The coordinator hands shards to peers (``Assign``), collects what they
send back (``UpdateArrived``) and says when to combine them. It never touches
numbers: an update's payload is opaque (arrays in-process, a CID on the
network) and travels back out in the commands; the driver does the numeric
work, in command order.

Modes:

* ``sync``: each round every shard's *gradient* at the current parameters.
  When every shard is in, ``Aggregate(round, contributions)`` (one per shard,
  by shard index); the driver aggregates, updates and publishes the
  parameters (version + 1), then runs the next round's ``Assign``s.
* ``local`` (DiLoCo-style): the same rounds, but an assignment asks for
  ``local_steps`` steps on the shard and the payload is the parameter *delta*;
  the driver's ``Aggregate`` is the outer optimiser step. Bytes moved per
  round are the same as sync; rounds are ``local_steps`` times fewer.
* ``async``: no barrier. A peer holds one assignment at a time; an update is
  applied at once (``Apply``) with weight ``1 / (1 + staleness)``, where
  staleness is how many updates were applied since the version the peer was
  given (the coordinator's own record, not the peer's claim). Past
  ``staleness_bound`` it is refused and the shard handed out again. A round is
  an epoch: it closes when every shard was applied once.

Faults: a lost peer's unfinished shards go back to the pending list and are
assigned to the least-loaded live peers (ties broken by the injected
``random.Random``); an assignment older than ``task_timeout`` is also given
to another peer, and the first answer for a shard wins (late ones are refused
as already counted). With no live peer, shards wait for ``PeerJoined``.

Nothing is assigned before ``min_peers`` peers have joined, so that the first
round is spread over them. Every ``checkpoint_every`` closed rounds a ``Checkpoint`` command follows the
aggregate; ``Finished`` follows the last round. Updates that do not match an
assignment of this round (unknown peer, other round, shard not assigned to
that peer, already counted) are refused with a reason (``Refused``), never an
exception. Invariant (tested with hypothesis): every shard of a closed round
was counted exactly once. ``to_record`` / ``from_record`` keep the state a
checkpoint or a successor coordinator needs (the shards in flight are handed
out again).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .sharding import check_fits, owners as part_owners

MODES = ("sync", "local", "async")


@dataclass(frozen=True)
class TrainConfig:
    mode: str = "sync"
    shards: int = 4
    rounds: int = 10
    local_steps: int = 1          # H: local steps per round (local mode)
    staleness_bound: int = 4      # async: updates staler than this are refused
    checkpoint_every: int = 0     # rounds between checkpoints; 0: none
    task_timeout: float = 60.0    # seconds before an unanswered shard is given to another peer
    param_bytes: int = 0          # size of the parameters one Assign ships (for the byte count)
    max_peers: int = 10_000
    min_peers: int = 1            # no shard is handed out before this many peers have joined
    param_shards: int = 1         # parts of the parameter vector, each aggregated by its own peer (sharding.py)
    peer_memory: int = 0          # bytes a peer may hold to aggregate (0: no limit); too little -> ShardingNeeded
    spot_check: float = 0.0       # share of counted updates recomputed before the round closes; a mismatch bans
    run: str = "train"            # the run's name: the parameter parts' keys derive from it

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not (1 <= self.shards <= 100_000 and self.rounds >= 1 and 1 <= self.min_peers <= self.max_peers and self.local_steps >= 1
                and self.staleness_bound >= 0 and self.checkpoint_every >= 0 and self.task_timeout > 0
                and self.param_shards >= 1 and self.peer_memory >= 0 and 0.0 <= self.spot_check <= 1.0):
            raise ValueError(f"invalid training configuration {self}")
        if self.param_shards > 1 and self.mode == "async":
            raise ValueError("param_shards needs mode sync or local (async applies each update alone)")
        if self.param_bytes and self.mode != "async":
            check_fits(self.param_bytes, self.shards, self.param_shards, self.peer_memory)


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerJoined:
    peer: str


@dataclass(frozen=True)
class PeerLost:
    peer: str


@dataclass(frozen=True)
class UpdateArrived:
    peer: str
    round: int
    shard: int
    payload: Any = None
    nbytes: int = 0


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class SpotChecked:
    """The verdict on a ``SpotCheck``: ``ok`` False when the update was far from the recomputation."""
    peer: str
    round: int
    shard: int
    ok: bool


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class Assign:
    peer: str
    round: int
    shard: int
    version: int        # parameter version the peer must start from
    kind: str           # "gradient" (sync, async) or "local" (local: `steps` steps, payload = delta)
    steps: int = 1


@dataclass(frozen=True)
class Contribution:
    shard: int
    peer: str
    payload: Any
    weight: float = 1.0
    staleness: int = 0


@dataclass(frozen=True)
class Aggregate:
    round: int
    contributions: tuple[Contribution, ...]
    owners: tuple[str, ...] = ()   # param_shards > 1: the peer that aggregates each part (closest to its key)


@dataclass(frozen=True)
class SpotCheck:
    """Recompute this counted update (same shard, round and parameter version) and answer ``SpotChecked``."""
    peer: str
    round: int
    shard: int
    version: int
    kind: str
    steps: int = 1


@dataclass(frozen=True)
class Banned:
    peer: str
    reason: str


@dataclass(frozen=True)
class Apply:
    round: int
    contribution: Contribution


@dataclass(frozen=True)
class Refused:
    peer: str
    round: int
    shard: int
    reason: str


@dataclass(frozen=True)
class Checkpoint:
    round: int          # rounds closed so far
    version: int


@dataclass(frozen=True)
class Finished:
    rounds: int
    version: int


@dataclass
class _Slot:
    """Who holds one shard of the current round: peer -> (version given, deadline)."""

    holders: dict[str, tuple[int, float]] = field(default_factory=dict)
    done: Contribution | None = None


class Coordinator:
    def __init__(self, config: TrainConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.round = 0
        self.version = 0
        self.peers: dict[str, set[int]] = {}   # live peer -> shards of this round it holds
        self.slots: list[_Slot] = []
        self.finished = False
        self.banned: set[str] = set()
        self.checks: dict[int, tuple[str, float]] = {}   # shard -> (peer checked, deadline) of this round
        self.started = False   # set once min_peers have joined; after that, any live peer will do
        self.stats = {"bytes_down": 0, "bytes_up": 0, "assigned": 0, "reassigned": 0, "refused": 0,
                      "applied": 0, "stale_dropped": 0,
                      "spot_checks": 0, "spot_failed": 0, "spot_timeouts": 0, "banned": 0}
        self._start_round()

    # --- the one entry point -------------------------------------------------------------

    def handle(self, event: Any, now: float) -> list[Any]:
        out: list[Any] = []
        if isinstance(event, PeerJoined):
            if event.peer not in self.peers and event.peer not in self.banned \
                    and len(self.peers) < self.config.max_peers:
                self.peers[event.peer] = set()
        elif isinstance(event, PeerLost):
            held = self.peers.pop(event.peer, set())
            for shard in held:
                self.slots[shard].holders.pop(event.peer, None)
                self.stats["reassigned"] += not self.slots[shard].holders
        elif isinstance(event, UpdateArrived):
            self._arrived(event, now, out)
        elif isinstance(event, SpotChecked):
            self._checked(event, out)
        elif isinstance(event, Tick):
            self._expire(now, out)
        else:
            raise TypeError(f"unknown event {event!r}")
        if not self.finished:
            self._assign(now, out)
        return out

    # --- record (checkpoint, takeover) ----------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """Plain data to rebuild this coordinator: config, round, version, stats and the open
        round's counted contributions (payloads must then be plain data: CIDs on the network).
        Who holds which shard is not kept: a rebuilt coordinator hands those shards out again."""
        return {"config": dict(self.config.__dict__), "round": self.round, "version": self.version,
                "finished": self.finished, "started": self.started, "stats": dict(self.stats),
                "banned": sorted(self.banned),
                "done": [None if s.done is None else [s.done.shard, s.done.peer, s.done.payload, s.done.weight,
                                                       s.done.staleness] for s in self.slots]}

    @classmethod
    def from_record(cls, record: Any, rng: random.Random) -> "Coordinator":
        """The inverse of ``to_record``; ``ValueError`` naming the problem for a malformed record."""
        try:
            config = TrainConfig(**record["config"])
            coord = cls(config, rng)
            rnd, version = record["round"], record["version"]
            if type(rnd) is not int or type(version) is not int or not 0 <= rnd <= config.rounds or version < 0:
                raise ValueError(f"round {rnd!r} / version {version!r} out of range")
            done = record["done"]
            if not isinstance(done, list) or len(done) != config.shards:
                raise ValueError(f"done must list {config.shards} shards")
            coord.round, coord.version = rnd, version
            coord.finished, coord.started = bool(record["finished"]), bool(record["started"])
            coord.stats.update({k: int(v) for k, v in record["stats"].items() if k in coord.stats})
            coord.banned = {str(p) for p in record.get("banned", [])}
            for i, entry in enumerate(done):
                if entry is not None:
                    shard, peer, payload, weight, staleness = entry
                    if shard != i or not isinstance(peer, str):
                        raise ValueError(f"done entry {i} is not shard {i}'s")
                    coord.slots[i].done = Contribution(i, peer, payload, float(weight), int(staleness))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed training record: {exc!r}") from None
        return coord

    # --- internals ------------------------------------------------------------------------

    def _start_round(self) -> None:
        self.checks = {}
        self.slots = [_Slot() for _ in range(self.config.shards)]
        for held in self.peers.values():
            held.clear()

    def _arrived(self, ev: UpdateArrived, now: float, out: list[Any]) -> None:
        self.stats["bytes_up"] += max(0, int(ev.nbytes)) if isinstance(ev.nbytes, int) else 0
        reason = self._check(ev)
        if reason:
            self.stats["refused"] += 1
            out.append(Refused(ev.peer, ev.round, ev.shard, reason))
            return
        slot = self.slots[ev.shard]
        given, _ = slot.holders.pop(ev.peer)
        self.peers[ev.peer].discard(ev.shard)
        if self.config.mode == "async":
            staleness = self.version - given
            if staleness > self.config.staleness_bound:
                self.stats["stale_dropped"] += 1
                out.append(Refused(ev.peer, ev.round, ev.shard, f"stale: {staleness} updates behind, "
                                   f"bound {self.config.staleness_bound}"))
                return  # the shard is handed out again by _assign
            slot.done = Contribution(ev.shard, ev.peer, ev.payload, 1.0 / (1 + staleness), staleness)
            out.append(Apply(self.round, slot.done))
            self.version += 1
            self.stats["applied"] += 1
        else:
            slot.done = Contribution(ev.shard, ev.peer, ev.payload)
            if self.config.spot_check and self.rng.random() < self.config.spot_check:
                self.checks[ev.shard] = (ev.peer, now + self.config.task_timeout)
                self.stats["spot_checks"] += 1
                local = self.config.mode == "local"
                out.append(SpotCheck(ev.peer, ev.round, ev.shard, given, "local" if local else "gradient",
                                     self.config.local_steps if local else 1))
        for other in slot.holders:  # backups of a finished shard are released
            self.peers.get(other, set()).discard(ev.shard)
        slot.holders.clear()
        self._maybe_close(out)

    def _maybe_close(self, out: list[Any]) -> None:
        if not self.finished and not self.checks and all(s.done is not None for s in self.slots):
            self._close(out)

    def _checked(self, ev: SpotChecked, out: list[Any]) -> None:
        """A spot check's verdict: passed, the round may close; failed, the peer is banned, each of its
        counted updates of this round thrown away and its shards handed out again."""
        if ev.round != self.round or self.checks.get(ev.shard, ("",))[0] != ev.peer:
            return  # not a check this round waits for (late, or already decided)
        del self.checks[ev.shard]
        if not ev.ok:
            self.stats["spot_failed"] += 1
            self._ban(ev.peer, f"update for shard {ev.shard} of round {ev.round} far from its recomputation", out)
        self._maybe_close(out)

    def _ban(self, peer: str, reason: str, out: list[Any]) -> None:
        self.banned.add(peer)
        self.stats["banned"] += 1
        out.append(Banned(peer, reason))
        for shard in self.peers.pop(peer, set()):
            self.slots[shard].holders.pop(peer, None)
        for shard, slot in enumerate(self.slots):
            if slot.done is not None and slot.done.peer == peer:
                slot.done = None
                self.checks.pop(shard, None)

    def _check(self, ev: UpdateArrived) -> str:
        if ev.peer in self.banned:
            return "banned from this training"
        if ev.peer not in self.peers:
            return "not a live peer of this training"
        if type(ev.round) is not int or ev.round != self.round:
            return f"round {ev.round!r} is not the current round {self.round}"
        if type(ev.shard) is not int or not 0 <= ev.shard < self.config.shards:
            return f"shard {ev.shard!r} is not in 0..{self.config.shards - 1}"
        slot = self.slots[ev.shard]
        if slot.done is not None:
            return f"shard {ev.shard} of round {self.round} is already counted"
        if ev.peer not in slot.holders:
            return f"shard {ev.shard} is not assigned to this peer"
        return ""

    def _close(self, out: list[Any]) -> None:
        closed = self.round
        if self.config.mode != "async":
            parts = self.config.param_shards
            owners = part_owners(self.config.run, parts, self.peers) if parts > 1 else ()
            out.append(Aggregate(closed, tuple(s.done for s in self.slots), owners))  # type: ignore[misc]
            self.version += 1
        self.round += 1
        every = self.config.checkpoint_every
        if every and self.round % every == 0:
            out.append(Checkpoint(self.round, self.version))
        if self.round >= self.config.rounds:
            self.finished = True
            out.append(Finished(self.round, self.version))
            return
        self._start_round()

    def _expire(self, now: float, out: list[Any]) -> None:
        for shard, (peer, deadline) in list(self.checks.items()):
            if deadline <= now:  # no verdict in time: the update stands
                del self.checks[shard]
                self.stats["spot_timeouts"] += 1
        self._maybe_close(out)
        if self.finished:
            return
        for shard, slot in enumerate(self.slots):
            if slot.done is None and slot.holders and all(d <= now for _, d in slot.holders.values()):
                # every holder is late: ask one more peer (the late ones may still answer first)
                before = len(out)
                self._give(shard, now, exclude=set(slot.holders), out=out)
                self.stats["reassigned"] += len(out) - before

    def _assign(self, now: float, out: list[Any]) -> None:
        self.started = self.started or len(self.peers) >= self.config.min_peers
        if not self.started:
            return
        for shard, slot in enumerate(self.slots):
            if slot.done is None and not slot.holders:
                self._give(shard, now, exclude=set(), out=out)

    def _give(self, shard: int, now: float, exclude: set[str], out: list[Any]) -> None:
        cap = 1 if self.config.mode == "async" else None
        choices = [p for p, held in self.peers.items()
                   if p not in exclude and (cap is None or len(held) < cap)]
        if not choices:
            return
        least = min(len(self.peers[p]) for p in choices)
        peer = self.rng.choice(sorted(p for p in choices if len(self.peers[p]) == least))
        slot = self.slots[shard]
        slot.holders[peer] = (self.version, now + self.config.task_timeout)
        self.peers[peer].add(shard)
        local = self.config.mode == "local"
        out.append(Assign(peer, self.round, shard, self.version, "local" if local else "gradient",
                          self.config.local_steps if local else 1))
        self.stats["assigned"] += 1
        self.stats["bytes_down"] += self.config.param_bytes
