"""Submit's half of a split matmul: a local input cut into the blocks its tiles read, each a CID of its own.

Theory of operation. ``plan.split_cuts(spec)`` names the cuts a job's split
stages need (A in row blocks, B in column blocks, of ``tile``). For a cut of
an input that is one local file, ``cut_file`` loads it as the executor
would (``ops/loaders.load_array``, with the input's band; a plain ``.npy``
is mapped instead, so that each block is read once), takes each block
(``plan.block_bounds``) and encodes it in the input's own format (``.tensor``
stays ``.tensor``; ``.npy`` and images become ``.npy``) in memory; the
caller imports and pins the bytes, so every block is made once, here, by
the peer that holds the data, and executing peers fetch only the blocks of
their tiles. The slicing is done by submit rather than by a first stage of
tasks because the submitting peer already reads every local input to add
it: a slice task would be one more dispatch, and the coordinator would pull
its outputs back to itself. An input named elsewhere cannot be cut by the planner (nobody there
need hold it); submit cuts it too (``remote_cuts``): an ``ipfs://CID/path``,
a URL or a registry handle is first resolved to a CID (submit_sources.py),
then submit fetches that DAG once (bounded by the fetch timeout), exports it to a
scratch file whose suffix comes from its first bytes (as an executing peer
does), and cuts that file as a local one: the tiles then fetch their blocks
from the submitting peer instead of each fetching the whole matrix.

``whole_inputs(spec)`` is what submit must still add whole: every input some
stage other than a split reads (a split reads only the blocks of a cut
input).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np

from ..errors import UserError
from ..ops import loaders, tensor_format
from .plan import Cut, block_bounds
from .spec import JobSpec


def local_cuts(spec: JobSpec, cuts: list[Cut]) -> list[Cut]:
    """The cuts of inputs that are one local file (the ones submit can make)."""
    return [c for c in cuts if not spec.inputs[c.input].collection and len(spec.inputs[c.input].sources) == 1
            and spec.inputs[c.input].sources[0].kind == "file"]


def remote_cuts(spec: JobSpec, cuts: list[Cut]) -> list[Cut]:
    """The cuts of inputs that are one source named elsewhere: an ``ipfs://CID`` (or ``ipfs://CID/path``), a
    URL or a registry handle. Submit brings each here once (a path under a CID, a URL and a handle are
    resolved to a CID first: submit_sources.py), then cuts it as a local file."""
    return [c for c in cuts if not spec.inputs[c.input].collection and len(spec.inputs[c.input].sources) == 1
            and spec.inputs[c.input].sources[0].kind in ("uri", "handle")]


def whole_inputs(spec: JobSpec) -> set[str]:
    """Job inputs a stage other than a split reads (or maps over): these are added whole."""
    out: set[str] = set()
    for s in spec.stages:
        if s.kind != "split":
            out |= {i.ref.name for i in s.inputs if i.ref.kind == "input"}
        out |= {r.name for r in s.over if r.kind == "input"}
    return out


def cut_file(path: str, cut: Cut) -> Iterator[bytes]:
    """The bytes of each block of ``cut`` of the file at ``path``, in order; a ``UserError`` if the file is
    not a 2-D array (loaders' messages)."""
    array = _mapped(path) if cut.band is None else None
    if array is None:
        array = loaders.load_array(path, cut.band)
    if array.ndim != 2:
        raise UserError(f"input {cut.input} is {array.ndim}-D: a split matmul reads 2-D arrays")
    as_tensor = path.lower().endswith(".tensor")
    for start, end in block_bounds(array.shape[cut.axis], cut.tile):
        block = np.ascontiguousarray(array[start:end] if cut.axis == 0 else array[:, start:end])
        if as_tensor:
            yield tensor_format.encode(block)
        else:
            head = io.BytesIO()
            np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(block))
            yield head.getvalue() + block.tobytes()              # what np.save writes, without a copy more


def _mapped(path: str) -> np.ndarray | None:
    """A plain .npy file mapped, not read (a block is read when it is copied); None for anything else (the
    loaders read it)."""
    if not path.lower().endswith(".npy"):
        return None
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return array if isinstance(array, np.memmap) and array.flags.c_contiguous else None
