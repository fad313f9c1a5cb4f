"""A job's lines of coordinators, and the question a replica asks before it takes a job over (pure).

Theory of operation
-------------------
Each coordinator of a job runs it on a *line* ``(epoch, nonce)``: the epoch
counts takeovers, the nonce is drawn by each coordinator (two replicas that
both took over at one epoch differ by it). Of two lines the higher wins
(replication.py's fencing). ``NO_LINE`` is ``(-1, -1)``: nothing known.

When a job's coordinator dies, the closest live replica of the set it named
takes the job over from its copy of the record. Its copy may be stale: the
job may have been taken over already by another holder (one that saw the
coordinator die first, or a replica whose turn came while this one did not
see it alive), and even ended and been forgotten there. So before it takes
over, the replica asks the record's other live holders the newest line they
know of the job (``known_line``: a record held, a line dropped and fenced,
the job coordinated there). ``TakeoverAsk`` gathers their answers:

* an answer newer than the line held means the job went on without this copy:
  the copy is dropped and that line fenced here, never taken over
  (``AVERT``, at once, counted as a takeover averted);
* when the time allowed is over with no newer line answered, the replica
  takes over (``TAKE_OVER``). It waits the whole time even when every holder
  asked has answered: a holder that took the job over meanwhile sends its
  newer record, which replaces the copy here (and the driver then takes
  nothing over); a holder that does not answer is no answer;
* an answer that does not hold up (not a pair of integers within the wire's
  bounds, or half of a line) is no answer, as a holder that cannot be
  reached: it is counted (``bad``) and not waited for any longer; an answer
  from a peer that was not asked, or a second one from the same peer, is
  counted and ignored.

The decision is the same in the job simulation (simulations/sched_peer.py)
and in the trio service (replication.py); only the waiting differs (engine
timers; a trio timeout). Only the holders the record names are asked, and
each is trusted about the line it reports: a known limit. A hostile holder
that claims a newer line makes the replica drop its copy, and then nobody
takes the job over (the claim proves nothing; a line signed by the
coordinator that began it would).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

NO_LINE = (-1, -1)
MAX_EPOCH = (1 << 31) - 1       # an epoch on the wire (as TaskRevoke's)
MAX_NONCE = (1 << 32) - 1       # a coordinator's nonce: 32 random bits (job_state.py)
AVERT = "avert"                 # a newer line exists: drop and fence the copy here
TAKE_OVER = "take_over"         # none: take the job over from the copy here
WAIT = "wait"                   # no newer line yet: wait for the time allowed


def line_of(record: Any) -> tuple[int, int]:
    """A record's (or a delta's) line (epoch, nonce); a field that is no integer counts as -1."""
    if not isinstance(record, dict):
        return NO_LINE
    epoch, nonce = record.get("epoch", -1), record.get("nonce", -1)
    return (epoch if type(epoch) is int else -1, nonce if type(nonce) is int else -1)


def valid_line(line: Any) -> bool:
    """A line as a peer may report it: ``NO_LINE``, or two integers within the wire's bounds."""
    if not isinstance(line, tuple) or len(line) != 2 or any(type(x) is not int for x in line):
        return False
    return line == NO_LINE or (0 <= line[0] <= MAX_EPOCH and 0 <= line[1] <= MAX_NONCE)


def known_line(*lines: tuple | None) -> tuple[int, int]:
    """The newest of the lines a peer knows of a job (a record held, a fenced line, the job coordinated);
    ``None`` or an invalid one counts as nothing."""
    return max((ln for ln in lines if ln is not None and valid_line(ln)), default=NO_LINE)


@dataclass
class TakeoverAsk:
    """A replica's question before a takeover: its ``held`` line, the peers ``asked``, their answers so far."""

    held: tuple
    asked: frozenset
    answered: set = field(default_factory=set)
    newest: tuple = NO_LINE          # the newest line answered (only a valid one)
    bad: int = 0                     # answers ignored (malformed, unasked, repeated)

    @classmethod
    def start(cls, held: tuple, asked: Iterable[Any]) -> TakeoverAsk:
        return cls(tuple(held), frozenset(asked))

    def answer(self, peer: Any, line: Any) -> str:
        """One holder's answer: ``AVERT`` (a newer line than ours) or ``WAIT``. A bad answer is counted: from a
        holder asked, it is its (only) answer, and says nothing."""
        if peer not in self.asked or peer in self.answered:
            self.bad += 1
        elif not valid_line(line):
            self.bad += 1
            self.answered.add(peer)
        else:
            self.answered.add(peer)
            self.newest = max(self.newest, line)
        return self.verdict(final=False)

    def no_answer(self, peer: Any) -> str:
        """A holder asked that cannot answer (unreachable, timed out, its answer undecodable): says nothing."""
        if peer in self.asked:
            self.answered.add(peer)
        return self.verdict(final=False)

    def verdict(self, final: bool = True) -> str:
        """``AVERT`` once a newer line was answered; else ``TAKE_OVER`` when the time allowed is over
        (``final``), ``WAIT`` before."""
        if self.newest > tuple(self.held):
            return AVERT
        return TAKE_OVER if final else WAIT
