"""Signed results and evidence: what an executor claims, and what a coordinator accepted and why.

*ResultClaim* (wire code 420, signed). The executing peer signs (job, task,
lease, digest of the input CIDs, digest of the output CIDs and inline values)
with its node identity key, as a forwardable claim (``wire.sign_claim``: the
signature covers a domain tag, the code and the exact body, and anyone checks
it against the signer's peer ID alone). Digests (SHA-256 of canonical CBOR)
keep a claim under 300 bytes whatever the task's size; whoever checks one has
the CIDs (from the plan, the result, the job report) and recomputes them.

*Evidence* (code 421, signed by the coordinator) says what was accepted for
one task and why: the strategy, how (``"2 of 3 agree (exact)"``, the check
and its seed), the accepted outputs' digest, the agreeing peers' claims and
the rejected ones' (at most ``MAX_CLAIMS`` each: bounded). The submitter's
peer checks it before it reports success (``check_evidence``): a coordinator
or a replica that took over cannot make it accept outputs that the required
number of distinct signers did not sign (``required_signers``), unless a peer
the submitter itself trusts signed them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import cbor2

from ...errors import WireError
from ...node import wire
from ...node.identity import Identity, PeerId
from ...node.wire import message
from .engine import Accept, Strategy, TaskVerification
from .policy import parse

MAX_ID = 128
MAX_TEXT = 512
MAX_CLAIMS = 16                # agreeing (and rejected) claims kept in one Evidence (policy.MAX_REPLICAS)
MAX_CLAIM_BYTES = 1024         # a ResultClaim frame is ~250 bytes
MAX_EVIDENCE_BYTES = 2 * MAX_CLAIMS * MAX_CLAIM_BYTES + 4096
DIGEST = 32


def _ids(**values: str) -> None:
    for name, v in values.items():
        if type(v) is not str or not 0 < len(v) <= MAX_ID:
            raise ValueError(f"{name} must be 1 to {MAX_ID} characters")


def _digest(name: str, v: bytes) -> None:
    if type(v) is not bytes or len(v) != DIGEST:
        raise ValueError(f"{name} must be a {DIGEST}-byte digest")


def digest_inputs(cids: Iterable[str]) -> bytes:
    """SHA-256 of the task's input CIDs in the task's order (canonical CBOR)."""
    return hashlib.sha256(cbor2.dumps([str(c) for c in cids], canonical=True)).digest()


def digest_outputs(outputs: dict[str, str] | Iterable[tuple[str, str]],
                   inline: dict[str, Any] | Iterable[tuple[str, Any]] = ()) -> bytes:
    """SHA-256 of the output CIDs and inline values, each sorted by name (canonical CBOR)."""
    o = sorted(dict(outputs).items())
    i = sorted(dict(inline).items())
    return hashlib.sha256(cbor2.dumps([[list(p) for p in o], [list(p) for p in i]], canonical=True)).digest()


@message(420, signed=True)
@dataclass(frozen=True)
class ResultClaim:
    """An executor's signed statement: for this task and inputs, these are my outputs."""

    job_id: str
    task_id: str
    lease_id: str
    peer: PeerId
    inputs: bytes          # digest_inputs(input CIDs)
    outputs: bytes         # digest_outputs(outputs, inline)

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task_id=self.task_id, lease_id=self.lease_id)
        _digest("inputs", self.inputs)
        _digest("outputs", self.outputs)


def sign_result(identity: Identity, job_id: str, task_id: str, lease_id: str, input_cids: Sequence[str],
                outputs: dict[str, str], inline: dict[str, Any] | None = None) -> bytes:
    """The executor's claim of one result, as bytes to send with ``ResultReady``."""
    return wire.sign_claim(identity, ResultClaim(job_id, task_id, lease_id, identity.peer_id,
                                                 digest_inputs(input_cids), digest_outputs(outputs, inline or {})))


def open_result(data: bytes) -> ResultClaim:
    """A verified claim (its signer is its ``peer``); ``WireError`` with the reason otherwise."""
    if type(data) is not bytes or len(data) > MAX_CLAIM_BYTES:
        raise WireError(f"a result claim is bytes of at most {MAX_CLAIM_BYTES}")
    signer, claim = wire.open_claim(data, ResultClaim, max_size=MAX_CLAIM_BYTES)
    if signer != claim.peer:
        raise WireError(f"result claim of {claim.peer.short} signed by {signer.short}")
    return claim


def claim_problem(data: bytes, job_id: str, task_id: str, input_cids: Sequence[str] | None, peer: Any,
                  outputs: dict[str, str] | None = None, inline: dict[str, Any] | None = None) -> str | None:
    """Why ``data`` is not ``peer``'s signed claim of exactly this result (None: it is)."""
    try:
        claim = open_result(data)
    except WireError as exc:
        return f"bad result claim: {exc}"
    if claim.job_id != job_id or claim.task_id != task_id:
        return f"the claim is for {claim.job_id}/{claim.task_id}, not {job_id}/{task_id}"
    if peer is not None and bytes(claim.peer) != bytes(peer):
        return "the claim is signed by another peer"
    if input_cids is not None and claim.inputs != digest_inputs(input_cids):
        return "the claim is for other inputs"
    if outputs is not None and claim.outputs != digest_outputs(outputs, inline or {}):
        return "the claim is for other outputs"
    return None


@message(421, signed=True)
@dataclass(frozen=True)
class Evidence:
    """A coordinator's signed account of one accepted task: which peers, which outputs, which check."""

    job_id: str
    task_id: str
    coordinator: PeerId
    strategy: str                       # the canonical text (policy.py)
    how: str                            # Accept.how
    verified: bool
    inputs: bytes                       # digest_inputs
    outputs: bytes                      # digest_outputs of the accepted result
    agreeing: tuple[bytes, ...] = ()    # signed ResultClaims that agree with it (itself included)
    rejected: tuple[bytes, ...] = ()    # signed ResultClaims rejected for this task
    trusted: tuple[PeerId, ...] = ()    # which agreeing signers ran as trusted re-executions

    def __post_init__(self) -> None:
        _ids(job_id=self.job_id, task_id=self.task_id)
        _digest("inputs", self.inputs)
        _digest("outputs", self.outputs)
        if type(self.strategy) is not str or len(self.strategy) > 200 or type(self.how) is not str or \
                len(self.how) > MAX_TEXT:
            raise ValueError("strategy or how is too long")
        for name, claims in (("agreeing", self.agreeing), ("rejected", self.rejected)):
            if len(claims) > MAX_CLAIMS or any(type(c) is not bytes or len(c) > MAX_CLAIM_BYTES for c in claims):
                raise ValueError(f"{name}: at most {MAX_CLAIMS} claims of at most {MAX_CLAIM_BYTES} bytes")
        if len(self.trusted) > MAX_CLAIMS:
            raise ValueError(f"trusted: at most {MAX_CLAIMS} peers")


def make_evidence(identity: Identity, v: TaskVerification, accept: Accept) -> bytes:
    """The coordinator's signed evidence of ``accept`` for the task ``v`` verified."""
    r = v.results[accept.index]
    agreeing = [v.results[i] for i in accept.agreeing if v.results[i].claim][:MAX_CLAIMS]
    rejected = [v.results[i] for i in sorted(v.rejected) if v.results[i].claim][:MAX_CLAIMS]
    ev = Evidence(v.task.job_id, v.task.task_id, identity.peer_id, v.strategy.canonical(), accept.how[:MAX_TEXT],
                  accept.verified, digest_inputs(v.task.inputs), digest_outputs(r.outputs, r.inline),
                  tuple(x.claim for x in agreeing), tuple(x.claim for x in rejected),
                  tuple(PeerId(bytes(x.peer)) for x in agreeing if x.trusted and isinstance(x.peer, bytes)))
    return wire.sign_claim(identity, ev)


def required_signers(strategy: Strategy) -> int:
    """Distinct signers of the accepted outputs a submitter requires (a peer it trusts counts for all)."""
    return int(getattr(strategy, "agree", getattr(strategy, "n", 1))) if strategy.name in ("replicate", "tolerance") \
        else 1


def check_evidence(data: bytes, job_id: str, task_id: str, input_cids: Sequence[str], outputs: dict[str, str],
                   inline: dict[str, Any], strategy_text: str, coordinators: set[bytes] | None = None,
                   trusted: set[bytes] = frozenset(), anchors: set[bytes] | None = None
                   ) -> tuple[Evidence | None, str | None]:
    """The submitter's check of one task's evidence against the outputs it was told of.

    (evidence, None) when it holds: signed by a coordinator in ``coordinators`` (None: any), for this
    job, task, inputs, outputs and strategy, with claims by ``required_signers`` distinct peers of
    exactly these outputs (or one by a peer in ``trusted``: the submitter's own, or one it trusts).
    Under an anchored strategy, when ``anchors`` (the peers the submitter vetted) is given, one signer of
    exactly these outputs must be in ``trusted`` or ``anchors``: colluders' claims alone are refused.
    Under a tolerance, other signers' outputs may differ within it: the claims must still be for
    this task and inputs. (None, reason) otherwise; never raises.
    """
    try:
        if type(data) is not bytes or len(data) > MAX_EVIDENCE_BYTES:
            return None, "evidence too large"
        signer, ev = wire.open_claim(data, Evidence, max_size=MAX_EVIDENCE_BYTES)
    except WireError as exc:
        return None, f"bad evidence: {exc}"
    if signer != ev.coordinator or (coordinators is not None and bytes(signer) not in coordinators):
        return None, "evidence signed by a peer that is not a coordinator of this job"
    if (ev.job_id, ev.task_id) != (job_id, task_id):
        return None, f"evidence for {ev.job_id}/{ev.task_id}"
    try:
        strategy = parse(strategy_text)
    except ValueError as exc:
        return None, f"the job's strategy does not parse: {exc}"
    if ev.strategy != strategy.canonical():
        return None, f"evidence under {ev.strategy!r}, the job asked for {strategy.canonical()!r}"
    if ev.inputs != digest_inputs(input_cids) or ev.outputs != digest_outputs(outputs, inline):
        return None, "evidence for other inputs or outputs"
    exact, close, trusted_ok = set(), set(), False
    for claim_bytes in ev.agreeing:
        try:
            claim = open_result(claim_bytes)
        except WireError as exc:
            return None, f"an agreeing claim is bad: {exc}"
        if (claim.job_id, claim.task_id, claim.inputs) != (job_id, task_id, ev.inputs):
            return None, "an agreeing claim is for another task or other inputs"
        (exact if claim.outputs == ev.outputs else close).add(bytes(claim.peer))
        trusted_ok |= claim.outputs == ev.outputs and bytes(claim.peer) in trusted
    if not exact:
        return None, "no claim signs the accepted outputs"
    if close and strategy.compare.needs_tensors is False:
        return None, "an agreeing claim signs other outputs under an exact comparison"
    need = required_signers(strategy)
    if not trusted_ok and len(exact | close) < need:
        return None, f"{len(exact | close)} distinct signers; {strategy.canonical()} needs {need}"
    if anchors is not None and strategy.anchored and not trusted_ok and not exact & anchors:
        return None, "no signer of these outputs is this peer or a peer it vetted (the strategy is anchored)"
    return ev, None
