"""The strategies: none, replicate(n, agree=k), adaptive, spot-check(rate), check, tolerance(rtol, atol).

Each is a ``Strategy`` (engine.py): how many executions to start with, and a
``decide`` that looks at one task's ``TaskVerification`` after every event.
They share one rule: a result from a trusted execution settles the task
(``settle_by_trusted``), and any disagreement among untrusted results is sent
to a trusted peer rather than to a vote when one is available, so that a
colluding majority is caught whenever an honest peer disagrees with it, and a
wrong result is *proven* wrong (and its peer banned) by the re-execution.

*Anchored* strategies (``adaptive``, ``replicate(..., anchor=1)``) add one
more: agreement alone never accepts a result, because colluders agree with
each other (two of them out-vote nobody). An agreeing group is accepted only
when it holds an *anchor*: a trusted execution (the submitter's own peer), or
a result of a peer the coordinator *vetted* (reputation.py: at least
``threshold`` consecutive results that matched an anchor, never proven
wrong). An unanchored agreement is escalated: a trusted re-execution, or, with
no trusted peer, an execution on a vetted peer; with neither the task gives up
rather than guess. A vetted peer's result is preferred by placement
(replicated.py puts one replica of each task on a vetted peer when it can),
so once peers are vetted escalation is rare. The guarantee: a wrong result is
accepted only if the trusted peer or a vetted peer returned it. A peer that
lies on every task is never vetted (each of its results that meets an anchor
disagrees with it), so against such liars — whatever their share, 49% and
colluding included — no wrong result is accepted; a peer that lies on a share
``q`` of tasks passes its vetting with probability at most ``(1 - q) **
threshold`` (each lie it tells before is caught by the anchor it meets).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

from .checks import get_check, run_check
from .compare import Close, Comparison, Exact
from .engine import Accept, Command, GiveUp, Load, Reject, Strategy, TaskVerification


def _tol(compare: Comparison) -> str:
    """The tolerance arguments of a strategy that compares within one (its canonical text)."""
    return f", rtol={compare.rtol!r}, atol={compare.atol!r}" if isinstance(compare, Close) else ""


@dataclass(frozen=True)
class NoVerification(Strategy):
    """``none``: the first result is taken."""

    name = "none"

    def decide(self, v: TaskVerification) -> list[Command]:
        if v.results:
            return [Accept(0, (0,), "single result, not verified", verified=False)]
        return v.again("execution lost")

    @property
    def max_executions(self) -> int:  # type: ignore[override]
        return 1 + 8          # a lost execution is asked again, within the job's retries in practice


class _Vote(Strategy):
    """n executions, then a vote among them (``vote``): ``needed`` agreeing; up to ``2n + 1`` executions."""

    n: int

    @property
    @abstractmethod
    def needed(self) -> int:
        """How many agreeing results accept the task."""

    @property
    def max_executions(self) -> int:  # type: ignore[override]
        return 2 * self.n + 1

    def first(self, v: TaskVerification) -> int:
        return self.n

    def decide(self, v: TaskVerification) -> list[Command]:
        return vote(v, self.needed, self.n)


@dataclass(frozen=True)
class Replicate(_Vote):
    """``replicate(n, agree=k, anchor=0|1)``: n executions on distinct peers, accepted when k agree and none dissents.

    With ``anchor=1`` the k agreeing must include an anchor (a trusted execution or a vetted peer: the
    module doc): safe against a colluding share of peers of any size below all, at n executions per task
    once peers are vetted (plus a trusted re-execution for each unanchored agreement until then).

    The decision waits for all n (or their loss), so that k colluding peers
    that answer first cannot be taken before an honest one dissents. A dissent,
    or no k agreeing once all n are in, goes to a trusted peer; with
    no trusted peer available, k agreeing results are accepted and the
    dissenters are outvoted (not proven wrong), else more executions are asked
    (up to ``2n + 1`` in all) and then the task gives up.
    """

    n: int = 2
    agree: int = 2
    compare: Comparison = field(default_factory=Exact)
    anchor: bool = False
    name = "replicate"

    @property
    def anchored(self) -> bool:  # type: ignore[override]
        return self.anchor

    @property
    def needed(self) -> int:
        return self.agree

    def decide(self, v: TaskVerification) -> list[Command]:
        return vote(v, self.agree, self.n, anchored=self.anchor)

    def canonical(self) -> str:
        return f"replicate({self.n}, agree={self.agree}{_tol(self.compare)}{', anchor=1' if self.anchor else ''})"


def vote(v: TaskVerification, agree: int, want: int, how: str = "", anchored: bool = False) -> list[Command]:
    """The replicate rule, shared by adaptive, tolerance and check's fallback (see Replicate); ``anchored``:
    agreement counts only with an anchor (the module doc, ``anchored_vote``)."""
    if v.trusted_result() is not None:
        return v.settle_by_trusted(f"trusted re-execution after disagreement{how}")
    if v.pending_trusted:
        return []
    idx = v.untrusted()
    if not v.ready(idx):
        return v.need_tensors(idx)
    groups = sorted(v.groups(idx), key=len, reverse=True)
    dissent = len(groups) > 1
    if dissent and not v.no_trusted_peer:
        return v.ask(1, trusted=True, why="results disagree")
    if v.pending:
        return []             # every execution asked for has its say: a colluding quorum cannot outrun a dissent
    if anchored:
        return anchored_vote(v, groups, agree, want, how)
    if groups and len(groups[0]) >= agree and (not dissent or len(groups[1]) < len(groups[0])):
        winner = groups[0]
        out: list[Command] = [Reject(v.results[i].peer, i, False, f"outvoted: {len(winner)} agreeing results differ",
                                     winner[0]) for g in groups[1:] for i in g]
        how = f"{len(winner)} of {len(idx)} agree ({v.strategy.compare}){how}"
        return out + [Accept(winner[0], tuple(winner), how)]
    if len(idx) < want and v.can_ask():
        return v.ask(want - len(idx), why=f"{len(idx)} of {want} results to compare")
    if v.can_ask():
        return v.ask(1, why="no agreement yet")
    return [GiveUp(f"no {agree} agreeing results in {len(idx)} executions")]


def anchored_vote(v: TaskVerification, groups: list[list[int]], agree: int, want: int, how: str) -> list[Command]:
    """The vote of an anchored strategy, every execution in and no trusted result: the one anchored group of at
    least ``agree`` results wins (those that differ are outvoted, not proven wrong); an unanchored agreement
    is escalated to a trusted execution, else to a vetted peer; else more executions; else give up."""
    held = [g for g in groups if v.anchor(g) is not None]
    n = sum(map(len, groups))
    if len(held) == 1 and len(held[0]) >= agree:
        winner = held[0]
        a = v.anchor(winner)
        assert a is not None
        agreeing = (a, *(i for i in winner if i != a))
        out: list[Command] = [Reject(v.results[i].peer, i, False, "outvoted: differs from an anchored agreement", a)
                              for g in groups if g is not winner for i in g]
        return out + [Accept(a, agreeing, f"{len(winner)} of {n} agree, anchored by a vetted peer "
                                          f"({v.strategy.compare}){how}", anchored=True)]
    if len(held) == 1 and v.can_ask():                # an anchored result with too few agreeing: more of them
        return v.ask(1, why=f"{len(held[0])} of {agree} agree with a vetted peer")
    if len(held) > 1 or (groups and len(groups[0]) >= agree):       # vetted peers disagree, or no anchor
        why = "vetted peers disagree" if len(held) > 1 else "agreement without an anchor"
        if not v.no_trusted_peer:
            return v.ask(1, trusted=True, why=why)
        if v.can_ask():
            return v.ask(1, why=f"{why}; no trusted peer", vetted=True)
        return [GiveUp(f"{why}, and no trusted peer was available, in {n} executions")]
    if n < want and v.can_ask():
        return v.ask(want - n, why=f"{n} of {want} results to compare")
    if v.can_ask():
        return v.ask(1, why="no anchored agreement yet")
    return [GiveUp(f"no anchored agreement of {agree} in {n} executions")]


@dataclass(frozen=True)
class Adaptive(Strategy):
    """``adaptive(threshold, rate)``, after BOINC's adaptive replication.

    A peer is *vetted* (trusted) once it has ``threshold`` consecutive results
    that matched an anchor (the ledger, reputation.py); an invalid one resets
    it, a proven lie bans it. A vetted peer's result is taken alone, except
    that with probability ``rate`` it is replicated anyway (so a vetted peer
    that turns bad is caught); an unvetted peer's result is replicated once and
    compared with a trusted re-execution (the submitter's own peer; with none
    available, with a second execution, and taken when both agree *and* one of
    them is vetted: anchored, the module doc). Placement gives each task's first
    execution to a vetted peer when it can, so once vetting has built up a task
    costs about ``1 + rate`` executions (plus what unvetted newcomers cost).
    Against peers that lie on every task, at any share: no wrong result. A
    vetted peer that starts lying gets a wrong result through with probability
    ``1 - rate`` per lie until one is replicated (and it is banned): the
    ``threshold`` is what keeps occasional liars from being vetted at all.
    """

    threshold: int = 100
    rate: float = 0.1
    compare: Comparison = field(default_factory=Exact)
    name = "adaptive"
    max_executions = 5
    anchored = True

    def decide(self, v: TaskVerification) -> list[Command]:
        if not v.results:
            return v.again("execution lost")
        first = v.results[0]
        if len(v.results) == 1 and not first.trusted and not v.pending and 0 not in v.rejected:
            if v.is_trusted_peer(first.peer):
                if not v.draw("replicate-trusted", self.rate):
                    return [Accept(0, (0,), "vetted peer, not replicated (adaptive)", verified=False)]
            elif not v.no_trusted_peer and not v.pending_trusted:     # an unvetted peer: the trusted peer
                return v.ask(1, trusted=True, why="an unvetted peer's result")   # re-executes it (2 in all)
        return vote(v, 2, 2, " (adaptive)", anchored=True)

    def canonical(self) -> str:
        return f"adaptive(threshold={self.threshold}, rate={self.rate!r}{_tol(self.compare)})"


@dataclass(frozen=True)
class SpotCheck(Strategy):
    """``spot-check(rate)``: one execution; a share ``rate`` of tasks is also run at a trusted peer.

    The result is held until its spot check is back: a wrong one is never
    taken, and its peer is proven wrong. With no trusted peer available the
    result is taken unchecked, and the evidence says so.
    """

    rate: float = 0.05
    compare: Comparison = field(default_factory=Exact)
    name = "spot-check"
    max_executions = 5

    def decide(self, v: TaskVerification) -> list[Command]:
        if v.trusted_result() is not None:
            return v.settle_by_trusted("spot check by a trusted peer")
        if not v.results:
            return v.again("execution lost")
        if v.pending_trusted:
            return []
        if v.draw("spot", self.rate):
            if not v.no_trusted_peer:
                return v.ask(1, trusted=True, why="spot check")
            return [Accept(0, (0,), "single result; spot check drawn but no trusted peer was available",
                           verified=False)]
        return [Accept(0, (0,), "single result, not drawn for a spot check", verified=False)]

    def canonical(self) -> str:
        return f"spot-check({self.rate!r}{_tol(self.compare)})"


@dataclass(frozen=True)
class Check(Strategy):
    """``check``: the task's declared cheap check (checks.py) on each result; without one, ``fallback``.

    A result that fails the check is proven wrong (the check and its seed are
    the evidence) and the task is run again elsewhere, up to ``max_executions``.
    """

    fallback: Strategy = field(default_factory=lambda: Replicate(2, 2))
    name = "check"
    max_executions = 5

    def first(self, v: TaskVerification) -> int:
        return 1 if get_check(v.task.check) else self.fallback.first(v)

    def decide(self, v: TaskVerification) -> list[Command]:
        if not get_check(v.task.check):
            return vote(v, getattr(self.fallback, "agree", 2), getattr(self.fallback, "n", 2), " (no check declared)")
        out: list[Command] = []
        for i, r in enumerate(v.results):
            if i in v.rejected:
                continue
            if i not in v.tensors or v.inputs is None:
                return out + ([Load(i, True)] if i not in v.loading else [])
            seed = v.memo.setdefault(f"seed{i}", v.rng.getrandbits(63))
            verdict = run_check(v.task.check, v.inputs, v.tensors[i], seed)
            if verdict.ok:
                return out + [Accept(i, (i,), verdict.detail, anchored=True)]
            out.append(Reject(r.peer, i, True, f"failed the {v.task.check} check: {verdict.detail}"))
        if v.pending:
            return out
        if v.can_ask():
            return out + v.ask(1, why="previous result failed its check" if v.results else "execution lost")
        return out + [GiveUp(f"no result passed the {v.task.check} check in {len(v.results)} executions")]

    def canonical(self) -> str:
        return "check"


@dataclass(frozen=True)
class Tolerance(_Vote):
    """``tolerance(rtol, atol)``: replicate ``n`` (default 2) times, agreeing when the tensors are close."""

    rtol: float = 1e-6
    atol: float = 0.0
    n: int = 2
    name = "tolerance"

    @property
    def compare(self) -> Comparison:  # type: ignore[override]
        return Close(self.rtol, self.atol)

    @property
    def needed(self) -> int:
        return self.n

    def canonical(self) -> str:
        return f"tolerance(rtol={self.rtol!r}, atol={self.atol!r}, n={self.n})"
