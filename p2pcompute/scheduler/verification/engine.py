"""One task's verification: results in, commands out (pure). The interface every strategy implements.

Theory of operation
-------------------
The coordinator makes one ``TaskVerification`` per task when the task becomes
ready. ``start`` asks for the first executions (``Execute``). Each execution
comes back as ``result(outcome)`` (a finished execution: its peer, output
CIDs, inline values, signed claim) or ``lost(peer)`` (it failed, lapsed or no
peer could be found). A strategy that compares tensors or runs a check asks
for them with ``Load``; the driver fetches the outputs (and, for a check, the
task's inputs) and hands them in with ``loaded``. After every event the
strategy's ``decide`` looks at the whole state and returns commands:

* ``Execute(n, exclude, trusted)`` n more executions on distinct peers, none
  in ``exclude`` (the driver also leaves out the peers running this task now);
  ``trusted``: at the submitter's own peer or a peer the ledger trusts.
* ``Load(index, inputs)`` the tensors of result ``index`` (and the inputs).
* ``Accept(index, evidence)`` the task's result is result ``index``; final.
* ``Reject(peer, index, proven, reason)`` that peer's result is wrong.
  ``proven``: shown wrong by a trusted re-execution or a check (the ledger
  bans it, an accusation can be made); not proven: outvoted (counted only).
* ``GiveUp(reason)`` no agreement within ``max_executions``: the task fails.

Outputs that cannot be fetched (``unavailable``: a lazy peer claimed results
it never computed, or it left) make that result not count, unproven.
``to_record``/``from_record`` + ``resume`` let a replica that takes over a
job go on: the executions out at the takeover are given back and asked again.

A strategy keeps its per-task memory (random draws made once) in ``memo``;
randomness comes only from the injected ``random.Random``, drawn once per
decision point, so deciding again on the same state gives the same answer.
Ground truth is a result from a trusted execution: whatever disagrees with it
is wrong, proven so only when the comparison is conclusive (``tolerance``, a
check, or exact comparison of a portable graph: see ops/opset.py; a float
rounding difference is never proof). After ``Accept`` or ``GiveUp`` every
event returns nothing.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

from .compare import Comparison, Exact

MAX_RESULTS = 48            # results kept per task (2 x 16 replicas + 1, and trusted runs); beyond: as if lost
MAX_TRUSTED_LOST = 3        # trusted executions that failed or lapsed before a task stops asking for one


@dataclass(frozen=True)
class TaskInfo:
    """What a strategy knows of the task: ids, input CIDs, whether exact comparison is conclusive, its check."""

    job_id: str
    task_id: str
    inputs: tuple[str, ...] = ()        # input CIDs, in the task's order
    portable: bool = True               # bit-exact across machines (Graph.portable()); else exact != is no proof
    check: str | None = None            # a declared cheap check (checks.py), e.g. "matmul"


@dataclass(frozen=True)
class Outcome:
    """One finished execution as received."""

    peer: Hashable
    outputs: tuple[tuple[str, str], ...] = ()      # (name, CID), sorted by name
    inline: tuple[tuple[str, Any], ...] = ()       # (name, small value), sorted by name
    claim: bytes = b""                              # the executor's signed ResultClaim (signed.py), b"" unsigned
    trusted: bool = False                           # from an Execute(trusted=True)

    @property
    def key(self) -> tuple:
        """What exact agreement compares: output CIDs and inline values."""
        return (self.outputs, tuple((k, repr(v)) for k, v in self.inline))

    @classmethod
    def of(cls, peer: Hashable, outputs: dict[str, str] | None = None, inline: dict[str, Any] | None = None,
           claim: bytes = b"", trusted: bool = False) -> Outcome:
        return cls(peer, tuple(sorted((outputs or {}).items())), tuple(sorted((inline or {}).items())),
                   claim, trusted)


# --- commands ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Execute:
    n: int
    exclude: frozenset = frozenset()
    trusted: bool = False
    why: str = ""
    vetted: bool = False                # only on peers the coordinator vetted (anchored strategies)


@dataclass(frozen=True)
class Load:
    index: int
    inputs: bool = False


@dataclass(frozen=True)
class Accept:
    index: int
    agreeing: tuple[int, ...]           # indexes of the results that agree with it (itself included)
    how: str                            # which check: "single", "3 of 3 agree", "freivalds r=20 seed=..."
    verified: bool = True               # False: taken alone, unchecked (none, a trusted peer, no spot check drawn)
    anchored: bool = False              # the agreement includes an anchor: a trusted execution, a passed check or
                                        # a vetted peer; the ledger credits only verified and anchored results


@dataclass(frozen=True)
class Reject:
    peer: Hashable
    index: int
    proven: bool
    reason: str
    against: int | None = None          # the result (trusted) it was compared with, if any


@dataclass(frozen=True)
class GiveUp:
    reason: str


Command = Execute | Load | Accept | Reject | GiveUp


class Strategy(ABC):
    """A verification strategy: ``first`` executions, then ``decide`` after every event. Subclass both."""

    name = "strategy"
    compare: Comparison = Exact()
    max_executions = 1
    anchored = False          # agreement alone is not enough: it needs an anchor (see TaskVerification.anchor)

    def first(self, v: TaskVerification) -> int:
        return 1

    @abstractmethod
    def decide(self, v: TaskVerification) -> list[Command]:
        """The commands after an event, from the task's results so far."""

    def canonical(self) -> str:
        return self.name


class TaskVerification:
    """One task's verification state; see the module docstring."""

    def __init__(self, task: TaskInfo, strategy: Strategy, rng: random.Random,
                 trusted_peer: Callable[[Hashable], bool] = lambda p: False) -> None:
        self.task = task
        self.strategy = strategy
        self.rng = rng
        self.is_trusted_peer = trusted_peer      # the ledger's view (adaptive): a peer with enough valid results
        self.results: list[Outcome] = []
        self.tensors: dict[int, dict[str, Any]] = {}
        self.inputs: dict[str, Any] | None = None
        self.loading: set[int] = set()
        self.pending = 0                          # ordinary executions asked for, not yet back
        self.pending_trusted = 0
        self.asked = 0                            # executions asked for in all (bounded by max_executions)
        self.no_trusted_peer = False              # a trusted execution was lost: none is available
        self.rejected: dict[int, Reject] = {}
        self.memo: dict[str, Any] = {}
        self.state = "running"                    # running, accepted, failed
        self.accepted: Accept | None = None
        self.refused = 0                          # results refused (after the end, over MAX_RESULTS, unasked)

    # --- events --------------------------------------------------------------------------------

    def start(self, now: float = 0.0) -> list[Command]:
        n = self.strategy.first(self)
        return self._run([self._ask(n, why="first")], now)

    def result(self, outcome: Outcome, now: float = 0.0) -> list[Command]:
        pending = self.pending_trusted if outcome.trusted else self.pending
        if self.state != "running" or pending <= 0 or \
                any(r.peer == outcome.peer and r.trusted == outcome.trusted for r in self.results):
            self.refused += 1
            return []
        if len(self.results) >= MAX_RESULTS:
            return self.lost(outcome.trusted, now)
        if outcome.trusted:
            self.pending_trusted -= 1
        else:
            self.pending -= 1
        self.results.append(outcome)
        return self._run([], now)

    def lost(self, trusted: bool = False, now: float = 0.0, none_left: bool = True) -> list[Command]:
        """An execution asked for did not come back (failed, lapsed, or no peer was found). A trusted one:
        ``none_left`` says no trusted peer can be had; else (it failed or lapsed) it may be asked again, up
        to ``MAX_TRUSTED_LOST`` times in all."""
        if self.state != "running":
            return []
        if trusted and self.pending_trusted > 0:
            self.pending_trusted -= 1
            self.memo["trusted_lost"] = lost = int(self.memo.get("trusted_lost", 0)) + 1
            self.no_trusted_peer |= none_left or lost >= MAX_TRUSTED_LOST
        elif not trusted and self.pending > 0:
            self.pending -= 1
        else:
            self.refused += 1
            return []
        return self._run([], now)

    def loaded(self, index: int, outputs: dict[str, Any], inputs: dict[str, Any] | None = None,
               now: float = 0.0) -> list[Command]:
        """Tensors of result ``index`` (name -> array), and the task's inputs if they were asked for."""
        if self.state != "running" or index not in self.loading:
            self.refused += 1
            return []
        self.loading.discard(index)
        self.tensors[index] = dict(outputs)
        if inputs is not None:
            self.inputs = dict(inputs)
        return self._run([], now)

    def unavailable(self, index: int, now: float = 0.0) -> list[Command]:
        """The outputs of result ``index`` could not be fetched (a lazy peer's, or a peer gone): it does not
        count. Not proof of a lie (a peer may just have left), so the peer is rejected unproven."""
        if self.state != "running" or index not in self.loading:
            self.refused += 1
            return []
        self.loading.discard(index)
        r = self.results[index]
        self.no_trusted_peer |= r.trusted
        cmd = Reject(r.peer, index, False, "its outputs could not be fetched")
        self.rejected[index] = cmd
        return self._run([cmd], now)

    def discard(self, index: int, reason: str, now: float = 0.0) -> list[Command]:
        """Result ``index`` no longer counts (its peer was banned meanwhile): rejected unproven, decide again."""
        if self.state != "running" or not 0 <= index < len(self.results) or index in self.rejected:
            self.refused += 1
            return []
        self.loading.discard(index)
        r = self.results[index]
        cmd = Reject(r.peer, index, False, reason)
        self.rejected[index] = cmd
        return self._run([cmd], now)

    # --- the job record: a replica that takes over goes on from here ----------------------------

    def to_record(self) -> dict[str, Any]:
        """What a replica needs to go on (plain CBOR values; tensors and loads in flight are not kept)."""
        return {"results": [[bytes(r.peer) if isinstance(r.peer, bytes) else r.peer, [list(o) for o in r.outputs],
                             [list(i) for i in r.inline], r.claim, r.trusted] for r in self.results],
                "asked": self.asked, "pending": self.pending, "pending_trusted": self.pending_trusted,
                "no_trusted": self.no_trusted_peer, "memo": dict(self.memo), "state": self.state,
                "rejected": [[i, c.proven, c.reason, c.against] for i, c in sorted(self.rejected.items())],
                "accepted": [self.accepted.index, list(self.accepted.agreeing), self.accepted.how,
                             self.accepted.verified, self.accepted.anchored] if self.accepted else None}

    @classmethod
    def from_record(cls, rec: dict[str, Any], task: TaskInfo, strategy: Strategy, rng: random.Random,
                    trusted_peer: Callable[[Hashable], bool] = lambda p: False,
                    peer_of: Callable[[Any], Hashable] = lambda p: p) -> TaskVerification:
        """The state ``to_record`` saved (``peer_of`` turns stored peers back into peer ids). Then ``resume``.
        ValueError for a malformed record."""
        v = cls(task, strategy, rng, trusted_peer)
        try:
            for peer, outputs, inline, claim, trusted in rec["results"][:MAX_RESULTS]:
                v.results.append(Outcome(peer_of(peer), tuple((str(a), str(b)) for a, b in outputs),
                                         tuple((str(a), b) for a, b in inline), bytes(claim), bool(trusted)))
            v.asked, v.pending, v.pending_trusted = int(rec["asked"]), int(rec["pending"]), int(rec["pending_trusted"])
            v.no_trusted_peer, v.memo, v.state = bool(rec["no_trusted"]), dict(rec["memo"]), str(rec["state"])
            for i, proven, reason, against in rec["rejected"]:
                v.rejected[int(i)] = Reject(v.results[int(i)].peer, int(i), bool(proven), str(reason), against)
            if rec["accepted"]:
                i, agreeing, how, verified, *anchored = rec["accepted"]
                v.accepted = Accept(int(i), tuple(int(a) for a in agreeing), str(how), bool(verified),
                                    bool(anchored and anchored[0]))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"not a verification record: {exc}") from None
        if v.state not in ("running", "accepted", "failed") or (v.state == "accepted") != (v.accepted is not None):
            raise ValueError("not a verification record: bad state")
        return v

    def resume(self, now: float = 0.0) -> list[Command]:
        """After a takeover: the executions the old coordinator had out are gone (their leases are revoked),
        so they are given back and asked again; tensors being loaded are asked for again."""
        if self.state != "running":
            return []
        self.asked -= self.pending
        self.pending = self.pending_trusted = 0
        self.loading.clear()
        return self._run([], now)

    # --- helpers for strategies ----------------------------------------------------------------

    def _run(self, out: list[Command], now: float) -> list[Command]:
        out = [c for c in out if not (isinstance(c, Execute) and c.n <= 0)]
        if self.state == "running":
            for cmd in self.strategy.decide(self):
                if isinstance(cmd, Accept):
                    self.state, self.accepted = "accepted", cmd
                elif isinstance(cmd, GiveUp):
                    self.state = "failed"
                elif isinstance(cmd, Reject):
                    if cmd.index in self.rejected:
                        continue
                    self.rejected[cmd.index] = cmd
                elif isinstance(cmd, Load):
                    if cmd.index in self.loading or cmd.index in self.tensors:
                        continue
                    self.loading.add(cmd.index)
                out.append(cmd)
        return out

    def _ask(self, n: int, trusted: bool = False, why: str = "", vetted: bool = False) -> Execute:
        if trusted:
            self.pending_trusted += n
        else:
            n = max(0, min(n, self.strategy.max_executions - self.asked))
            self.pending += n
            self.asked += n
        return Execute(n, self.exclude(), trusted, why, vetted)

    def ask(self, n: int, trusted: bool = False, why: str = "", vetted: bool = False) -> list[Command]:
        """Commands asking for ``n`` more executions (none past ``max_executions``); ``vetted``: only on peers
        the coordinator vetted (a lost one is no proof that none is left: the strategy bounds the asking)."""
        cmd = self._ask(n, trusted, why, vetted)
        return [cmd] if cmd.n > 0 else []

    def again(self, why: str) -> list[Command]:
        """Nothing while executions are out; else one more, or ``GiveUp`` once ``max_executions`` were asked."""
        if self.pending:
            return []
        if self.can_ask():
            return self.ask(1, why=why)
        return [GiveUp(f"no usable result in {self.asked} executions")]

    def exclude(self) -> frozenset:
        return frozenset(r.peer for r in self.results)

    def untrusted(self) -> list[int]:
        """Results from ordinary executions, except those whose outputs could not be fetched."""
        return [i for i, r in enumerate(self.results) if not r.trusted and i not in self.rejected]

    def anchor(self, indexes: Sequence[int]) -> int | None:
        """The result among ``indexes`` that anchors them: a trusted execution's, else a vetted peer's (the
        ledger's ``is_trusted``: enough consecutive results that matched an anchor, never proven wrong)."""
        for i in indexes:
            if self.results[i].trusted:
                return i
        return next((i for i in indexes if self.is_trusted_peer(self.results[i].peer)), None)

    def trusted_result(self) -> int | None:
        return next((i for i, r in enumerate(self.results) if r.trusted and i not in self.rejected), None)

    def can_ask(self) -> bool:
        return self.asked < self.strategy.max_executions

    def draw(self, name: str, p: float) -> bool:
        """True with probability ``p``, drawn once per task and name."""
        if name not in self.memo:
            self.memo[name] = self.rng.random() < p
        return self.memo[name]

    def need_tensors(self, indexes: Sequence[int], inputs: bool = False) -> list[Command]:
        """Load commands for the results whose tensors are not here yet ([] when all are)."""
        missing = [i for i in indexes if i not in self.tensors and self.results[i].outputs]
        return [Load(i, inputs) for i in missing]

    def ready(self, indexes: Sequence[int]) -> bool:
        """Can ``compare`` decide between these results now? Identical ones need no tensors; else all are loaded."""
        return not self.strategy.compare.needs_tensors or len({self.results[i].key for i in indexes}) <= 1 or \
            all(i in self.tensors or not self.results[i].outputs for i in indexes)

    def same(self, i: int, j: int) -> bool:
        return self.strategy.compare.same(self.results[i], self.tensors.get(i), self.results[j], self.tensors.get(j))

    def groups(self, indexes: Sequence[int]) -> list[list[int]]:
        """Results that agree, greedily (each joins the first group whose first member it agrees with)."""
        out: list[list[int]] = []
        for i in indexes:
            for g in out:
                if self.same(g[0], i):
                    g.append(i)
                    break
            else:
                out.append([i])
        return out

    def conclusive(self) -> bool:
        """Is a disagreement proof that one side is wrong?"""
        return self.strategy.compare.conclusive(self.task.portable)

    def settle_by_trusted(self, how: str) -> list[Command]:
        """The trusted result is the truth: accept it, reject whatever disagrees (proven if conclusive)."""
        t = self.trusted_result()
        assert t is not None
        others = self.untrusted()
        if not self.ready([t, *others]):
            return self.need_tensors([t, *others])
        agree = [i for i in others if self.same(t, i)]
        out: list[Command] = [Reject(self.results[i].peer, i, self.conclusive(),
                                     f"differs from a trusted re-execution ({self.strategy.compare})", t)
                              for i in others if i not in agree]
        out.append(Accept(t, (t, *agree), how, anchored=True))
        return out
