"""The scheduler service's verification role (a mixin): its ledger, evidence checks, tensors, spreading bans.

Theory of operation
-------------------
One ``VerifyEnv`` (verification/replicated.py) per service, shared by the
jobs it coordinates: the reputation ``Ledger``, this node's identity (it signs
each task's evidence, 421, and its accusations, 422), the Sybil facts of a
member (its address from membership; loopback addresses say nothing), and
who is trusted for re-executions: this peer itself for the jobs submitted
here (the submitter's own peer).

* ``LoadTensors``: the outputs of one result (and, for a check, the task's
  inputs) are fetched by CID (not pinned), decoded (ops/tensor_format) and fed
  back as ``TensorsLoaded``; what cannot be fetched is ``TensorsUnavailable``
  (a lazy peer's claim of outputs it never made).
* ``BanPeer``: the accusation this coordinator signed goes to every live
  member (``AccusationNotice``, 423). A receiver checks it
  (``accusation.open_accusation``: signatures, the accused's own signed claim,
  a proof by someone else) and then only *suspects* the accused: its
  placement leaves the accused out of replicas while others can run them. It
  bans only on its own proof, or when the proof is a result signed by a peer
  it trusts itself (``judge``), so a lying accuser gets nowhere.
* Before a job submitted here is reported done, every task of its result
  must carry evidence that ``signed.check_evidence`` accepts, signed by this
  peer (the coordinator) with enough distinct signers of those outputs, or
  one signed by this peer as the trusted re-execution, and, under an anchored
  strategy, one signer that this peer's ledger vetted (or itself); otherwise
  the job is reported failed with the reason.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import P2PComputeError
from ..node.identity import PeerId
from ..node.wire import message
from .verification import accusation as acc_mod
from .verification import signed
from .verification.engine import Outcome
from .verification.replicated import (BanPeer, LoadTensors, PeerBanned, TensorsLoaded, TensorsUnavailable,
                                      VerifyEnv)
from .verification.reputation import Ledger
from .verification.sybil import PeerFacts, SybilRules

log = logging.getLogger(__name__)

MAX_SUSPECTS = 4096
MAX_OWN_JOBS = 4096
MAX_LOAD_BYTES = 64 << 20       # tensors loaded for one comparison


@message(423)
@dataclass(frozen=True)
class AccusationNotice:
    """A coordinator -> every member: a signed ``Accusation`` (verification/accusation.py, code 422)."""

    accusation: bytes

    def __post_init__(self) -> None:
        if type(self.accusation) is not bytes or len(self.accusation) > acc_mod.MAX_ACCUSATION_BYTES:
            raise ValueError("an accusation is bytes of at most 1 MiB")


class VerifyingMixin:
    """Mixed into SchedulerService (service.py)."""

    _venv: VerifyEnv | None = None

    def verify_env(self) -> VerifyEnv:
        if self._venv is None:
            self._own_jobs: OrderedDict[str, None] = OrderedDict()
            self.suspects: OrderedDict[str, str] = OrderedDict()
            cfg = self.config
            self._venv = VerifyEnv(ledger=Ledger(cfg.verification_threshold, cfg.ledger_max_peers),
                                   trusted=self._trusted_for, facts=self._facts, rules=cfg.sybil or SybilRules(),
                                   identity=self.node.identity, suspected=self.suspects.__contains__,
                                   live=self._member_live, free=self._member_free)
        return self._venv

    def _member(self, peer: Any) -> Any:
        membership = self.node.services.get("membership")
        sm = getattr(membership, "sm", None)
        try:
            return sm.member(PeerId.from_string(str(peer))) if sm is not None else None
        except (ValueError, P2PComputeError):
            return None

    def _member_live(self, peer: Any) -> bool:
        """Alive (or only suspected) by membership: a vetted peer asked directly must be."""
        if str(peer) == str(self.node.peer_id):
            return True
        m = self._member(peer)
        return m is not None and m.state in ("alive", "suspect")

    def _member_free(self, peer: Any) -> bool:
        """A free slot by its capability record (the coordinator's crew is asked only then)."""
        from .placement import Candidate
        if str(peer) == str(self.node.peer_id):
            return True
        m = self._member(peer)
        if m is None or m.state != "alive" or m.record is None:
            return False
        try:
            return Candidate.from_record(m.record).free_slots > 0
        except (ValueError, TypeError, AttributeError):
            return False

    def submitted_here(self, job_id: str) -> None:
        self.verify_env()
        self._own_jobs[job_id] = None
        while len(self._own_jobs) > MAX_OWN_JOBS:
            self._own_jobs.popitem(last=False)

    def _trusted_for(self, job_id: str) -> list[str]:
        return [str(self.node.peer_id)] if job_id in self._own_jobs else []

    def _facts(self, peer: Any) -> PeerFacts:
        membership = self.node.services.get("membership")
        sm = getattr(membership, "sm", None)
        try:
            m = sm.member(PeerId.from_string(peer)) if sm is not None else None
        except (ValueError, P2PComputeError):
            m = None
        return PeerFacts(peer, (m.address,) if m is not None and m.address else (), None)

    # --- commands of a verified job ------------------------------------------------------------

    def carry_verification(self, job: Any, c: Any) -> bool:
        """Carry out a verification command of ``job`` (True), or say it is none (False)."""
        if isinstance(c, BanPeer):
            log.warning("job %s: peer %s banned: %s", c.job_id, str(c.peer)[:16], c.reason)
            if c.accusation:
                self._spawn(self._spread, c.accusation, str(c.peer))
            self._spawn(self._banned_here, c.peer)
            return True
        if isinstance(c, LoadTensors):
            self._spawn(self._load, job, c)
            return True
        return False

    async def _banned_here(self, peer: Any) -> None:
        """Every verified job running here re-verifies the done tasks resting on ``peer`` (PeerBanned)."""
        for job in list(self.jobs.values()):
            if job.js.verify is not None and job.js.state == "running":
                await self._feed(job, PeerBanned(peer))

    async def _spread(self, accusation: bytes, accused: str) -> None:
        msg = AccusationNotice(accusation)
        for peer in list(self._live()):
            if str(peer) in (accused, str(self.node.peer_id)):
                continue
            try:
                with trio.move_on_after(self.config.request_timeout_s):
                    await self.node.transport.send(peer, msg)
            except P2PComputeError as exc:
                log.debug("accusation to %s not sent: %s", peer.short, exc)

    async def _on_accusation(self, peer: PeerId, msg: AccusationNotice) -> None:
        env = self.verify_env()
        acc, why = acc_mod.open_accusation(msg.accusation)
        if acc is None:
            self.stats["accusations_refused"] = self.stats.get("accusations_refused", 0) + 1
            log.info("accusation from %s refused: %s", peer.short, why)
            return
        accused = str(acc.accused)
        if acc.truth_claim and bytes(signed.open_result(acc.truth_claim).peer) == bytes(self.node.peer_id):
            own = Outcome.of(str(self.node.peer_id), dict(acc.truth_outputs), acc_mod._inline(acc.truth_inline))
            verdict = acc_mod.judge(acc, own=own)     # the proof is my own result: I can judge it myself
            if verdict.guilty:
                if env.ledger.ban(accused, f"accused by {peer.short}: {verdict.reason}", trio.current_time()):
                    await self._banned_here(accused)
                return
        self.suspects[accused] = acc.reason[:200]
        self.suspects.move_to_end(accused)
        while len(self.suspects) > MAX_SUSPECTS:
            self.suspects.popitem(last=False)
        self.stats["accusations_heard"] = self.stats.get("accusations_heard", 0) + 1

    async def _load(self, job: Any, c: LoadTensors) -> None:
        from ..ops import tensor_format
        from ..storage.cid import Cid
        from ..storage.exporter import read_file

        storage = self.node.services["storage"]

        async def get(cid: str) -> Any:
            parsed = Cid.parse(cid)
            await storage.fetch(parsed, pin=False, timeout=self.config.fetch_timeout_s)
            data = await trio.to_thread.run_sync(lambda: read_file(storage.blockstore.get, parsed))
            if len(data) > MAX_LOAD_BYTES:
                raise ValueError(f"over {MAX_LOAD_BYTES} bytes")
            return tensor_format.decode(data)

        try:
            outputs = {name: await get(cid) for name, cid in c.outputs}
            inputs = None
            if c.inputs:
                inputs = await self._operands(job, c.task, [await get(cid) for cid in c.inputs])
        except (P2PComputeError, ValueError, OSError) as exc:
            log.info("job %s: tensors of %s result %d not loaded: %s", c.job_id, c.task, c.index, exc)
            await self._feed(job, TensorsUnavailable(c.task, c.index))
            return
        await self._feed(job, TensorsLoaded(c.task, c.index, outputs, inputs))

    async def _operands(self, job: Any, task: str, arrays: list) -> dict:
        """A check's inputs: the matmul's two operands computed from the task's inputs by its graph."""
        from .plan import decode_payload, full_payload
        from .verification.checks import matmul_operands

        spec = job.js.tasks[task].spec
        graph = decode_payload(full_payload(job.js.plan, spec))[0].graph
        feeds = {ref.name: a for ref, a in zip(spec.inputs, arrays)}
        return await trio.to_thread.run_sync(matmul_operands, graph, feeds)

    # --- the submitter's check ---------------------------------------------------------------------

    def evidence_problem(self, job: Any) -> str | None:
        """Why the evidence of a job submitted and coordinated here does not hold (None: it holds, or the
        job is not verified here)."""
        js = job.js
        if js.verify is None or js.job_id not in getattr(self, "_own_jobs", ()):
            return None
        me = bytes(self.node.peer_id)
        anchors = self._anchors(js)
        for tid in dict.fromkeys(task for task, _, _ in js.outputs()):
            t = js.tasks[tid]
            if t.state != "done":
                continue
            evidence = (t.verified or {}).get("evidence") or b""
            inputs = [cid for _, cid, _ in js._resolve_inputs(t)]
            _, why = signed.check_evidence(evidence, js.job_id, tid, inputs, t.outputs, t.inline,
                                           js.plan.verification, coordinators={me}, trusted={me}, anchors=anchors)
            if why:
                return f"task {tid}: {why}"
        return None

    def _anchors(self, js: Any) -> set[bytes]:
        """The peers this peer's ledger vetted, as bytes (the anchors an anchored job's evidence may rest on)."""
        out = set()
        for p in self.verify_env().ledger.vetted(js.verify.threshold):
            try:
                out.add(bytes(p) if isinstance(p, (bytes, PeerId)) else bytes(PeerId.from_string(str(p))))
            except (ValueError, TypeError, P2PComputeError):
                continue
        return out
