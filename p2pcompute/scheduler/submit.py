"""POST /v1/jobs: a job.yaml and its base dir on this machine -> a JobPlan, local inputs added and pinned.

The body is JSON ``{"job": "<job.yaml text>", "base": "/abs/dir"}`` (or
``{"path": "/abs/job.yaml"}``). The text is checked (``spec.check``: every
problem with its line, a 400 listing them); each local input file is added
to the daemon's blockstore and pinned (so executing peers fetch it by
bitswap, or get it carried in their grant), all in one worker thread, and
announced (later, if the caller gives ``announce``); ``ipfs://CID`` inputs are used as they are;
URLs and registry handles are brought here and pinned (submit_sources.py, with ``node``); local
programs are refused for now. A local input a split matmul reads is cut into
its row or column blocks, each added as a CID of its own (``blocks.py``), and
is not added whole unless another stage reads it; an input named elsewhere
that a split reads (``ipfs://CID``, ``ipfs://CID/path``, a URL, a handle: the
last three resolved to a CID first) is fetched here (at most ``CUT_FETCH_S``
without a block) and cut the same way. The resolution then goes
to ``plan_job``, and the plan keeps where each input came from
(``JobPlan.sources``).
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio
import yaml

from ..errors import UserError
from ..ops.jobfile import MAX_JOB_BYTES
from . import spec as specmod
from .model import JobPlan, PlanError
from .blocks import cut_file, local_cuts, remote_cuts, whole_inputs
from .plan import Cut, Resolved, plan_job, resolution, split_cuts
from .spec_check import lines_of, with_lines
from .submit_sources import origins, resolve_remote


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
CUT_FETCH_S = 60.0        # an ipfs:// input a split reads: given up when no block came for this long


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
        data = yaml.load(text, Loader=_LOADER)    # libyaml's when there: a sixth of the pure-Python loader's time
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

    remote = await resolve_remote(spec, node) if node is not None else {}
    blocks, cut_only = await _cut_splits(spec, storage, remote)     # a split's tiles read only their blocks
    for path in cut_only:                                    # nobody reads it whole: not added
        added[path] = Resolved("", Path(path).stat().st_size)
    files = [p for p in spec.local_files() if p not in cut_only]
    added.update(zip(files, await trio.to_thread.run_sync(lambda: [add(p) for p in files])))   # one thread hop
    for path in files:
        if announce is None:
            await storage.pin(_cid(added[path].cid))             # and announce it
        else:
            announce(_cid(added[path].cid))


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
        plan = plan_job(spec, resolved, job_id, blocks=blocks)
        return replace(plan, sources=_cut_sources(origins(spec, resolved, remote), blocks))
    except PlanError as exc:
        raise UserError(f"the job cannot be planned: {exc}") from None


async def _cut_splits(spec: specmod.JobSpec, storage: Any,
                      remote: dict[str, Any]) -> tuple[dict[Cut, list[Resolved]], set[str]]:
    """Each input a split reads, cut into its blocks, each added, pinned and announced (``blocks.py``): a
    local file, or one named elsewhere (``remote``: what submit_sources resolved it to, else an
    ``ipfs://CID``); and the local files only splits read (they need not be added whole)."""
    from ..storage.importer import import_stream

    cuts = local_cuts(spec, split_cuts(spec))
    out: dict[Cut, list[Resolved]] = {}

    def cut_and_add(cut: Cut, path: str) -> list[Resolved]:
        made = []
        with storage.blockstore.session():
            for data in cut_file(path, cut):
                result = import_stream(io.BytesIO(data), storage.blockstore.put)
                storage.blockstore.pin(result.cid)
                made.append(Resolved(str(result.cid), len(data)))
        return made

    for cut in cuts:
        out[cut] = await trio.to_thread.run_sync(cut_and_add, cut, spec.inputs[cut.input].sources[0].text)
        for r in out[cut]:
            await storage.pin(_cid(r.cid))                   # and announce it
    with tempfile.TemporaryDirectory(prefix="p2pcompute-cut-") as scratch:
        for cut in remote_cuts(spec, split_cuts(spec)):       # fetched once here, then cut as a local file
            text = spec.inputs[cut.input].sources[0].text
            uri = f"ipfs://{remote[text].cid}" if text in remote else text
            if not uri.startswith("ipfs://"):
                raise UserError(f"input {text[:200]}: only local files, ipfs://, URLs and handles can be submitted")
            path = await _fetched(storage, uri, Path(scratch) / f"{cut.input}-{cut.axis}")
            out[cut] = await trio.to_thread.run_sync(cut_and_add, cut, path)
            for r in out[cut]:
                await storage.pin(_cid(r.cid))
    cut_names, whole = {c.input for c in cuts}, whole_inputs(spec)
    needed = {src.text for name, i in spec.inputs.items() if name not in cut_names or name in whole
              for src in i.sources}
    return out, {spec.inputs[c.input].sources[0].text for c in cuts} - needed


async def _fetched(storage: Any, uri: str, stem: Path) -> str:
    """The ``ipfs://`` input ``uri`` brought here (not pinned: its blocks are) and exported to ``stem`` plus
    the suffix its first bytes call for; ``UserError`` when it cannot be had."""
    from ..errors import BlockNotFound, P2PComputeError
    from ..storage.exporter import iter_file
    from .runner import suffix_of

    cid = _cid(uri.removeprefix("ipfs://").split("/")[0])

    def export() -> str:
        tmp = stem.with_suffix(".part")
        with open(tmp, "wb") as fh:
            for chunk in iter_file(storage.blockstore.get, cid):
                fh.write(chunk)
        with open(tmp, "rb") as fh:
            head = fh.read(16)
        path = stem.with_name(stem.name + suffix_of(head))
        tmp.rename(path)
        return str(path)

    try:
        return await trio.to_thread.run_sync(export)
    except BlockNotFound:
        pass
    try:
        await storage.fetch(cid, pin=False, timeout=CUT_FETCH_S)
        return await trio.to_thread.run_sync(export)
    except (P2PComputeError, BlockNotFound) as exc:
        raise UserError(f"input {uri}: input not found, to cut it into the blocks of a split: {exc}") from None


def _cut_sources(sources: tuple, blocks: dict[Cut, list[Resolved]]) -> tuple:
    """``describe``'s sources, an input only cut (no CID of its own) saying in how many blocks."""
    count = {c.input: len(b) for c, b in blocks.items()}
    return tuple((i, k, s, c or f"cut in {count.get(i, 0)} blocks") for i, k, s, c in sources)


def _cid(text: str) -> Any:
    from ..storage.cid import Cid

    return Cid.parse(text)
