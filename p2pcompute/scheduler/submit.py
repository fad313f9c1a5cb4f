"""POST /v1/jobs: a job.yaml and its base dir on this machine -> a JobPlan, local inputs added and pinned.

The body is JSON ``{"job": "<job.yaml text>", "base": "/abs/dir"}`` (or
``{"path": "/abs/job.yaml"}``). The text is checked (``spec.check``: every
problem with its line, a 400 listing them); each local input file is added
to the daemon's blockstore and pinned (so executing peers fetch it by
bitswap, or get it carried in their grant), all in one worker thread, and
announced (later, if the caller gives ``announce``); ``ipfs://CID`` inputs are used as they are;
URLs and registry handles are brought here and pinned (submit_sources.py, with ``node``); local
programs are refused for now. The resolution then goes to ``plan_job``, and
the plan keeps where each input came from (``JobPlan.sources``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import trio
import yaml

from ..errors import UserError
from ..ops.jobfile import MAX_JOB_BYTES
from . import spec as specmod
from .model import JobPlan, PlanError
from .plan import Resolved, plan_job, resolution
from .spec_check import lines_of, with_lines
from .submit_sources import origins, resolve_remote


def load_request(request: dict[str, Any]) -> specmod.JobSpec:
    """The checked JobSpec of a request body; ``UserError`` listing every problem."""
    if "path" in request:
        path = Path(str(request["path"]))
        if not path.is_absolute():
            raise UserError("\"path\" must be an absolute path on the daemon's machine")
        return specmod.load(path)
    text, base = request.get("job"), request.get("base")
    if not isinstance(text, str) or not isinstance(base, str) or not Path(base).is_absolute():
        raise UserError("give {\"job\": \"<job.yaml text>\", \"base\": \"/absolute/dir\"} "
                        "or {\"path\": \"/abs/job.yaml\"}")
    if len(text.encode()) > MAX_JOB_BYTES:
        raise UserError(f"the job file is larger than {MAX_JOB_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML: {exc}") from None
    spec, problems = specmod.check(data, Path(base))
    if problems:
        raise specmod.SpecError(sorted(with_lines(problems, lines_of(text)), key=lambda p: (p.line or 0, p.path)))
    assert spec is not None
    return spec


async def plan_from_request(request: dict[str, Any], storage: Any, job_id: str, announce: Any = None,
                            node: Any = None) -> JobPlan:
    """``announce(cid)``: if given, the inputs added are handed to it to announce later (off the submit's
    path); else each is announced before the plan is made. ``node``: URLs and registry handles are
    resolved through it (submit_sources.py)."""
    spec = load_request(request)
    for s in spec.stages:
        if s.program and not s.program.startswith(("builtin:", "ipfs://")):
            raise UserError(f"stage {s.name}: a local program ({s.program}) cannot be submitted yet; "
                            "add it and name it ipfs://CID")
    added: dict[str, Resolved] = {}

    def add(path: str) -> Resolved:
        from ..storage.importer import import_path

        with storage.blockstore.session():
            result = import_path(path, storage.blockstore.put)
            storage.blockstore.pin(result.cid)
        return Resolved(str(result.cid), Path(path).stat().st_size)

    files = list(spec.local_files())
    added.update(zip(files, await trio.to_thread.run_sync(lambda: [add(p) for p in files])))   # one thread hop
    for path in files:
        if announce is None:
            await storage.pin(_cid(added[path].cid))             # and announce it
        else:
            announce(_cid(added[path].cid))

    remote = await resolve_remote(spec, node) if node is not None else {}

    def resolve(src: Any, hint: Any) -> Resolved:
        shape, dtype = (hint.shape, hint.dtype.name) if hint is not None else (None, None)
        if src.text in remote:
            got = remote[src.text]
            return Resolved(got.cid, got.size, shape or got.shape, dtype or got.dtype)
        if src.kind == "file":
            r = added[src.text]
            return Resolved(r.cid, r.size, shape, dtype)
        if src.kind == "uri" and src.text.startswith("ipfs://"):
            return Resolved(src.text.removeprefix("ipfs://").split("/")[0], None, shape, dtype)
        raise UserError(f"input {src.text[:200]}: only local files, ipfs://, URLs and handles can be submitted")

    try:
        resolved = resolution(spec, resolve)
        return replace(plan_job(spec, resolved, job_id), sources=origins(spec, resolved, remote))
    except PlanError as exc:
        raise UserError(f"the job cannot be planned: {exc}") from None


def _cid(text: str) -> Any:
    from ..storage.cid import Cid

    return Cid.parse(text)
