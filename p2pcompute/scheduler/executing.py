"""The scheduler service's executor role (a mixin of ``SchedulerService``, service.py).

Theory of operation. ``ExecutorLeases`` (leases.py) decides; this carries
out its commands. A ``TaskOffer`` becomes an ``Offer`` (its deadline this
peer's clock plus ``valid_s``); ``Accept`` goes to the coordinator as
``TaskAccept``, ``Decline`` as a ``rejected`` ``TaskFailure``. A
``TaskGrant``'s payload, inputs and carried blocks (small inputs, stored
here if they hash to their CIDs: carry.py) are kept only while the grant is handled:
if the leases answer ``Run``, a run starts (runner.py) in a cancel scope that
``Stop`` (a revoke) cancels; otherwise nothing of it stays. A revoke comes
from the coordinator that granted the run, or from the job's successor: a revoke
of a newer epoch than the lease's (leases.py), or, once membership here has
that one dead, from any peer (the run's result could go nowhere). ``SendHeartbeat``
is a one-way ``TaskHeartbeat``. A finished run sends ``TaskDone`` or
``TaskFailure`` (a ``TaskDone`` carries the blocks of small outputs; outputs
are pinned here and announced in the background; tried three times while the coordinator is unreachable, no
more once membership has it dead: its successor re-offered the task) and
then ``Ended`` frees the slot; either carries the run's stderr as a CID
pinned here (task_logs.py). The leases' refusals are the reply's reason.
"""

from __future__ import annotations

import logging
import shutil
from functools import partial
from typing import Any

import trio

from ..errors import P2PComputeError
from ..node.identity import PeerId
from . import events as ev
from . import leases as lx
from . import carry, task_logs
from .messages import (MAX_CARRIED, SchedAck, TaskAccept, TaskDone, TaskFailure, TaskGrant, TaskHeartbeat,
                       TaskOffer, TaskRevoke)
from .runner import Outcome, run_granted
from .verification.signed import sign_result

log = logging.getLogger("p2pcompute.scheduler.service")


class ExecutingMixin:
    """Needs of the service: node, config, leases, stats, _granted, _runs, _nursery, _spawn, _tell, _ask,
    _timer_wake, _exec_timer, _on_heartbeat."""

    node: Any
    config: Any
    leases: Any
    stats: dict
    _nursery: Any
    result_hook: Any = None        # tests only: (job, task, Outcome) -> the Outcome reported (a lying executor)

    def _exec(self, event: Any) -> list[str]:
        """Feed the leases one event and carry out their commands; the reasons of what they refused."""
        if self.leases is None:
            return ["the scheduler is starting"]
        try:
            cmds = self.leases.handle(event, trio.current_time())
        except Exception:
            self.stats["errors"] += 1
            log.exception("executor leases failed on %s (the service goes on)", type(event).__name__)
            return ["internal error"]
        refused = []
        for c in cmds:
            if isinstance(c, lx.Accept):
                self._spawn(self._tell, c.coordinator, TaskAccept(c.job_id, c.task, c.lease_id))
            elif isinstance(c, lx.Decline):
                self._spawn(self._tell, c.coordinator, TaskFailure(c.job_id, c.task, c.lease_id, ev.REJECTED,
                                                                   c.reason[:4096]))
            elif isinstance(c, lx.Run):
                granted = self._granted.pop((c.job_id, c.lease_id), None)
                if granted is not None and self._nursery is not None:
                    self._nursery.start_soon(self._run, c, granted)
            elif isinstance(c, lx.Stop):
                scope = self._runs.get((c.job_id, c.lease_id))
                if scope is not None:
                    scope.cancel()
            elif isinstance(c, lx.SendHeartbeat):
                self._spawn(self._beat, c)
            elif isinstance(c, ev.SetTimer):
                self._exec_timer = c.at
                self._timer_wake.set()
            elif isinstance(c, ev.Refused):
                self.stats["refused"] += 1
                refused.append(c.reason)
        return refused

    async def _on_offer(self, peer: PeerId, msg: TaskOffer) -> SchedAck:
        refused = self._exec(lx.Offer(msg.job_id, msg.task, peer, msg.lease_id, trio.current_time() + msg.valid_s))
        return SchedAck(not refused, "; ".join(refused))

    async def _on_grant(self, peer: PeerId, msg: TaskGrant) -> SchedAck:
        key = (msg.job_id, msg.lease_id)
        self._granted[key] = (msg.payload, msg.inputs, msg.blocks)
        refused = self._exec(lx.Grant(msg.job_id, msg.task, peer, msg.lease_id, trio.current_time() + msg.expires_s))
        self._granted.pop(key, None)          # not run: nothing of it is kept
        return SchedAck(not refused, "; ".join(refused))

    async def _on_revoke(self, peer: PeerId, msg: TaskRevoke) -> SchedAck:
        granted_by = self._run_coordinator.get((msg.job_id, msg.lease_id))
        if granted_by is not None and granted_by != peer and granted_by in self._gone:
            peer = granted_by       # the dead coordinator's successor stops its run (a result nobody can take)
        return SchedAck(not self._exec(lx.Revoked(msg.job_id, peer, msg.lease_id, msg.reason, msg.epoch)))

    def _discard(self, scratch: Any) -> None:
        """A run's scratch directory, removed off the result's path (now, if the service is stopping)."""
        if self._nursery is None:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            self._nursery.start_soon(partial(trio.to_thread.run_sync, shutil.rmtree, scratch, True))

    async def _beat(self, c: lx.SendHeartbeat) -> None:
        msg = TaskHeartbeat(c.job_id, c.task, c.lease_id)
        if c.coordinator == self.node.peer_id:
            await self._on_heartbeat(c.coordinator, msg)
            return
        try:
            with trio.move_on_after(self.config.request_timeout_s):
                await self.node.transport.send(c.coordinator, msg)
        except P2PComputeError as exc:
            log.debug("heartbeat to %s not sent: %s", c.coordinator.short, exc)

    async def _keep_log(self, outcome: Outcome) -> tuple[str, int]:
        """The run's stderr pinned here as a CID (task_logs.py): (CID, bytes), ("", 0) when it wrote none."""
        if not outcome.stderr:
            return "", 0
        try:
            return await task_logs.keep(self.node.services["storage"], outcome.stderr)
        except (P2PComputeError, OSError) as exc:
            log.warning("stderr of a run not kept: %s", exc)
            return "", 0

    async def _run(self, c: lx.Run, granted: tuple[bytes, tuple, tuple]) -> None:
        key = (c.job_id, c.lease_id)
        payload, inputs, blocks = granted
        storage = self.node.services["storage"]
        outcome: Outcome | None = None
        try:
            with trio.CancelScope() as scope:
                self._runs[key] = scope
                self._run_coordinator[key] = c.coordinator
                try:
                    executor = self.node.services["compute"].executor
                    if executor is None:
                        outcome = Outcome(ev.REJECTED, "the executor is starting")
                    else:
                        if blocks:          # small inputs carried in the grant: stored if they hash right
                            await trio.to_thread.run_sync(carry.keep, storage.blockstore, blocks,
                                                          [cid for _, cid in inputs], False)
                        outcome = await run_granted(storage, executor, payload, inputs,
                                                    self.config.fetch_timeout_s, self._announce_soon, self._discard)
                except Exception as exc:
                    log.exception("running %s/%s failed", c.job_id, c.task)
                    outcome = Outcome(ev.CRASH, f"{type(exc).__name__}: {exc}")
            if outcome is None:
                return                              # revoked: the coordinator does not want it any more
            self.stats["tasks_run"] += 1
            log_cid, log_bytes = await self._keep_log(outcome)
            if outcome.kind:
                msg: Any = TaskFailure(c.job_id, c.task, c.lease_id, outcome.kind, outcome.message[:4096],
                                       log=log_cid, log_bytes=log_bytes)
            else:
                carried: tuple = ()
                if c.coordinator != self.node.peer_id and outcome.outputs:    # small outputs go with it
                    carried = await trio.to_thread.run_sync(carry.gather, storage.blockstore,
                                                            list(outcome.outputs.values()), MAX_CARRIED)
                if self.result_hook is not None:        # tests only: a lying executor
                    outcome = self.result_hook(c.job_id, c.task, outcome)
                claim = sign_result(self.node.identity, c.job_id, c.task, c.lease_id, [cid for _, cid in inputs],
                                    outcome.outputs, outcome.inline)
                msg = TaskDone(c.job_id, c.task, c.lease_id, outcome.outputs, outcome.inline, outcome.sizes,
                               log=log_cid, log_bytes=log_bytes, blocks=carried, claim=claim)
            for attempt in range(3):
                reply = await self._ask(c.coordinator, msg)
                if reply.ok or not reply.reason.startswith(("RequestTimeout", "PeerUnreachable", "TransportError")):
                    break
                if c.coordinator in self._gone:      # dead: its successor re-offered the task already
                    break
                await trio.sleep(1.0 + attempt)
            if not reply.ok:
                log.info("result of %s/%s not taken: %s", c.job_id, c.task, reply.reason)
        finally:
            self._runs.pop(key, None)
            self._run_coordinator.pop(key, None)
            self._exec(lx.Ended(c.job_id, c.lease_id))
