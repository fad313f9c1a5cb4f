"""A signed accusation of a proven wrong result, and how another peer judges it.

Theory of operation
-------------------
A coordinator that proved a peer wrong (``Reject(proven=True)``) bans it and
spreads an ``Accusation`` (wire code 422, signed by the accuser): the
accused's own signed ``ResultClaim`` with the outputs it claimed, the task's
input CIDs, and the proof: either the trusted re-execution's signed claim and
outputs (``kind="mismatch"``) or the check that failed and its seed
(``kind="check"``). Everything an accusation says about the accused is signed
by the accused, so nobody can make a peer appear to have claimed outputs it
did not claim.

A receiving peer never bans on the accuser's word. ``open_accusation``
refuses anything forged or inconsistent (bad signatures, an accused claim not
by the accused or for another task, outputs or inputs that do not match the
claims' digests, a "mismatch" whose two results are the same, a proof by the
accused itself). ``judge`` then decides on the receiver's own work: for a
check, it runs the check with the same seed on the tensors it loaded itself
(deterministic); for a mismatch, it compares the accused's outputs with its
own recomputation (or a result of a peer it trusts) under the job's
comparison. Guilty only when they differ and the difference is conclusive:
within a ``tolerance`` it is agreement, and exact inequality of a
non-portable graph is no proof (ops/opset.py). So a lying accuser gets
nowhere, and an honest peer is never banned for a rounding difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cbor2

from ...errors import WireError
from ...node import wire
from ...node.identity import Identity, PeerId
from ...node.wire import message
from .checks import run_check
from .engine import Outcome
from .policy import parse
from .signed import MAX_CLAIM_BYTES, ResultClaim, digest_inputs, digest_outputs, open_result

MAX_ITEMS = 1024               # outputs, inputs
MAX_INLINE_BYTES = 64 * 1024
MAX_ACCUSATION_BYTES = 1 << 20
KINDS = ("mismatch", "check")


def _pairs(name: str, v: tuple) -> None:
    if len(v) > MAX_ITEMS or any(len(p) != 2 or len(p[0]) > 128 or not 0 < len(p[1]) <= 256 for p in v):
        raise ValueError(f"{name}: at most {MAX_ITEMS} (name, CID) pairs")


@message(422, signed=True)
@dataclass(frozen=True)
class Accusation:
    accuser: PeerId
    accused: PeerId
    job_id: str
    task_id: str
    kind: str                                    # "mismatch" or "check"
    strategy: str                                # the job's canonical strategy: its comparison
    inputs: tuple[str, ...]                      # the task's input CIDs (the claims sign their digest)
    accused_claim: bytes
    accused_outputs: tuple[tuple[str, str], ...]
    accused_inline: bytes = b""                  # canonical CBOR of the inline values (a map)
    truth_claim: bytes = b""                     # mismatch: the trusted re-execution's claim
    truth_outputs: tuple[tuple[str, str], ...] = ()
    truth_inline: bytes = b""
    check: str = ""                              # check: its name (checks.py) and seed
    seed: int = 0
    reason: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind is one of {KINDS}")
        for name in ("job_id", "task_id", "strategy", "check"):
            if len(getattr(self, name)) > 200:
                raise ValueError(f"{name} is too long")
        if len(self.inputs) > MAX_ITEMS or any(not 0 < len(c) <= 256 for c in self.inputs):
            raise ValueError(f"inputs: at most {MAX_ITEMS} CIDs")
        _pairs("accused_outputs", self.accused_outputs)
        _pairs("truth_outputs", self.truth_outputs)
        if len(self.accused_claim) > MAX_CLAIM_BYTES or len(self.truth_claim) > MAX_CLAIM_BYTES:
            raise ValueError("a claim is too large")
        if len(self.accused_inline) > MAX_INLINE_BYTES or len(self.truth_inline) > MAX_INLINE_BYTES:
            raise ValueError("inline values are too large")
        if not 0 <= self.seed < 1 << 63 or len(self.reason) > 512:
            raise ValueError("bad seed or reason")


def _inline_bytes(inline: dict[str, Any] | Sequence[tuple[str, Any]]) -> bytes:
    return cbor2.dumps(dict(inline), canonical=True) if inline else b""


def _inline(data: bytes) -> dict[str, Any]:
    if not data:
        return {}
    value = cbor2.loads(data)
    if type(value) is not dict or not all(type(k) is str for k in value):
        raise ValueError("inline values are not a map of names")
    if _inline_bytes(value) != data:
        raise ValueError("inline values are not in canonical CBOR (one spelling per accusation)")
    return value


def accuse(identity: Identity, job_id: str, task_id: str, strategy: str, inputs: Sequence[str],
           accused: Outcome, truth: Outcome | None = None, check: str = "", seed: int = 0,
           reason: str = "") -> bytes:
    """The accuser's signed accusation of ``accused`` (an Outcome with its claim), proven by ``truth`` or a check."""
    claim = open_result(accused.claim)
    acc = Accusation(identity.peer_id, claim.peer, job_id, task_id, "check" if check else "mismatch", strategy,
                     tuple(inputs), accused.claim, accused.outputs, _inline_bytes(accused.inline),
                     truth.claim if truth else b"", truth.outputs if truth else (),
                     _inline_bytes(truth.inline) if truth else b"", check, seed, reason[:512])
    return wire.sign_claim(identity, acc)


def open_accusation(data: Any) -> tuple[Accusation | None, str | None]:
    """(accusation, None) if it is well formed and consistent; (None, why it is refused). Never raises."""
    try:
        if type(data) is not bytes or len(data) > MAX_ACCUSATION_BYTES:
            return None, "not an accusation of at most 1 MiB"
        signer, acc = wire.open_claim(data, Accusation, max_size=MAX_ACCUSATION_BYTES)
    except WireError as exc:
        return None, f"bad accusation: {exc}"
    if signer != acc.accuser:
        return None, "signed by someone other than the accuser"
    if acc.accuser == acc.accused:
        return None, "a peer accusing itself"
    try:
        parse(acc.strategy)
    except ValueError as exc:
        return None, f"unknown strategy: {exc}"
    try:
        accused_inline, truth_inline = _inline(acc.accused_inline), _inline(acc.truth_inline)
    except Exception as exc:  # cbor2 raises several types on hostile bytes
        return None, f"bad inline values: {exc}"
    why = _claim_matches("accused", acc.accused_claim, acc, acc.accused_outputs, accused_inline)
    if why:
        return None, why
    accused = open_result(acc.accused_claim)
    if accused.peer != acc.accused:
        return None, "the accused claim is not signed by the accused"
    if acc.kind == "check":
        if acc.truth_claim or not acc.check:
            return None, "a check accusation names its check and carries no other result"
        return acc, None
    why = _claim_matches("truth", acc.truth_claim, acc, acc.truth_outputs, truth_inline)
    if why:
        return None, why
    truth = open_result(acc.truth_claim)
    if truth.peer == acc.accused:
        return None, "the proof is the accused's own result"
    if truth.outputs == accused.outputs:
        return None, "the two results are the same: nothing to accuse"
    return acc, None


def _claim_matches(name: str, data: bytes, acc: Accusation, outputs: tuple, inline: dict) -> str | None:
    try:
        claim: ResultClaim = open_result(data)
    except WireError as exc:
        return f"the {name} claim is bad: {exc}"
    if (claim.job_id, claim.task_id) != (acc.job_id, acc.task_id):
        return f"the {name} claim is for another task"
    if claim.inputs != digest_inputs(acc.inputs):
        return f"the {name} claim is for other inputs"
    if claim.outputs != digest_outputs(outputs, inline):
        return f"the {name} outputs are not the ones its claim signs"
    return None


@dataclass(frozen=True)
class Verdict:
    guilty: bool
    reason: str


def judge(acc: Accusation, *, accused_tensors: dict[str, Any] | None = None, own: Outcome | None = None,
          own_tensors: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
          portable: bool = True) -> Verdict:
    """Decide an opened accusation on this peer's own work (see the module docstring).

    ``check``: ``inputs`` and ``accused_tensors`` loaded by this peer from the CIDs. ``mismatch``:
    ``own``, this peer's recomputation of the task (or a result of a peer it trusts), and, when the
    comparison is on tensors, ``accused_tensors`` and ``own_tensors``. ``portable``: whether the
    task's graph is bit-exact across machines (this peer knows it from the task itself).
    """
    if acc.kind == "check":
        if inputs is None or accused_tensors is None:
            return Verdict(False, "not judged: the inputs and the accused's outputs were not loaded")
        result = run_check(acc.check, inputs, accused_tensors, acc.seed)
        return Verdict(not result.ok, f"the {acc.check} check {'passes' if result.ok else 'fails'}: {result.detail}")
    if own is None:
        return Verdict(False, "not judged: no recomputation of the task")
    compare = parse(acc.strategy).compare
    accused = Outcome(acc.accused, acc.accused_outputs, tuple(sorted(_inline(acc.accused_inline).items())))
    if compare.needs_tensors and accused.key != own.key and (accused_tensors is None or own_tensors is None):
        return Verdict(False, "not judged: the tensors to compare were not loaded")
    if compare.same(accused, accused_tensors, own, own_tensors):
        return Verdict(False, f"my recomputation agrees with the accused ({compare}): the accusation is false")
    if not compare.conclusive(portable):
        return Verdict(False, "the results differ, but exactly compared results of a non-portable graph "
                              "may differ by rounding: no proof")
    return Verdict(True, f"my recomputation differs from the accused's result ({compare})")


def accusation_for(identity: Identity, v: Any, reject: Any) -> bytes | None:
    """The accusation a coordinator spreads for ``reject`` (a proven ``Reject`` of the TaskVerification ``v``):
    the trusted result it differed from, or the check it failed with that check's seed. None when it
    cannot be made (not proven, or the accused's result carries no valid claim: nothing to show others)."""
    if not reject.proven:
        return None
    accused = v.results[reject.index]
    try:
        open_result(accused.claim)
        if reject.against is not None:
            return accuse(identity, v.task.job_id, v.task.task_id, v.strategy.canonical(), v.task.inputs, accused,
                          truth=v.results[reject.against], reason=reject.reason)
        seed = v.memo.get(f"seed{reject.index}")
        if seed is None or not v.task.check:
            return None
        return accuse(identity, v.task.job_id, v.task.task_id, v.strategy.canonical(), v.task.inputs, accused,
                      check=v.task.check, seed=seed, reason=reject.reason)
    except (WireError, ValueError):
        return None
