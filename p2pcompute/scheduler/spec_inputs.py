"""The inputs of a job.yaml: local files, globs, URIs, registry handles, lists; what each names.

``InputReader.read(name, raw, where)`` turns one entry of ``inputs:`` (or a
stage's own input) into an ``InputSpec``: its items as ``Source``s in a fixed
order (a glob's matches sorted by name), whether it is a collection (a glob or
a list: a stage maps over it), its band, and a dtype and shape hint (declared,
or read from a local file's header). It checks what it can without fetching:
files exist, globs match, URIs and handles parse. Each problem goes to the
``add(path, message)`` it was given, with the path of the offending key.
"""

from __future__ import annotations

import glob as globlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import P2PComputeError, UserError
from ..ops.jobfile import peek_spec
from ..ops.opset import Spec
from ..ops.tasks import InputFile

MAX_ITEMS = 1_000_000            # items of one input (a glob or a list)
HANDLE = re.compile(r"^dh[a-z2-7]{84}$")
PEEKABLE = (".tensor", ".npy", ".tif", ".tiff")


@dataclass(frozen=True)
class Source:
    kind: str          # "file" (an absolute path), "uri" (canonical ipfs://, http(s)://, kubo-rpc://), "handle"
    text: str


@dataclass(frozen=True)
class InputSpec:
    name: str
    sources: tuple[Source, ...]
    collection: bool = False          # a glob or a list: a stage maps over it
    band: int | None = None
    raw: bool = False
    hint: Spec | None = None          # dtype and shape, when declared or read from a local file's header


def classify(text: str) -> str:
    """What a source string names: uri, handle, glob or file."""
    if "://" in text:
        return "uri"
    if HANDLE.match(text):
        return "handle"
    return "glob" if any(c in text for c in "*?[") else "file"


def at(where: str, *parts: Any) -> str:
    """``at("stages[1]", "map", "batch")`` -> ``stages[1].map.batch``."""
    out = where
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class InputReader:
    def __init__(self, base: Path, add: Callable[[str, str], None]) -> None:
        self.base = base
        self.add = add

    def read(self, name: str, raw: Any, where: str, allow_from: bool) -> InputSpec | None:
        """The input ``name`` from its entry ``raw`` at ``where``; None if it names nothing usable."""
        if isinstance(raw, str):
            raw = {"items": [raw]} if classify(raw) != "glob" else {"glob": raw}
            single_text = True
        else:
            single_text = False
        if isinstance(raw, list):
            raw = {"items": raw}
        if not isinstance(raw, dict):
            return None
        if "from" in raw and not allow_from:
            self.add(at(where, "from"), "`from` is for stage inputs; a job input names its data itself")
            return None
        sources: list[Source] = []
        texts = [(raw[k], k) for k in ("path", "uri", "handle", "glob") if k in raw]
        texts += [(t, "items") for t in raw.get("items", [])]
        collection = "glob" in raw or ("items" in raw and not single_text) or \
            any(k == "path" and classify(t) == "glob" for t, k in texts)
        for i, (text, key) in enumerate(texts):
            place = at(where, key, i) if key == "items" and not single_text else \
                (where if single_text else at(where, key))
            sources += self._sources(text, key, place)
        if len(sources) > MAX_ITEMS:
            self.add(where, f"{len(sources):,} items: an input may have at most {MAX_ITEMS:,}")
            return None
        hint = self._hint(name, raw, sources, where)
        if not sources:
            return None
        return InputSpec(name, tuple(sources), collection, raw.get("band"), bool(raw.get("raw", False)), hint)

    def _sources(self, text: str, key: str, where: str) -> list[Source]:
        kind = classify(text) if key in ("path", "items") else key
        if kind == "uri":
            from ..storage.dataref import canonical_uri
            if "://" not in text:
                self.add(where, f"{text!r} is not a URI (ipfs://CID, https://..., kubo-rpc://HOST:PORT/CID)")
                return []
            try:
                uri = canonical_uri(text)
            except UserError as exc:
                self.add(where, str(exc))
                return []
            if uri.startswith("file://"):
                from urllib.parse import unquote, urlsplit
                return self._sources(unquote(urlsplit(uri).path), "path", where)
            return [Source("uri", uri)]
        if kind == "handle":
            from ..storage.registry import parse_handle
            try:
                parse_handle(text)
            except P2PComputeError as exc:
                self.add(where, str(exc))
                return []
            return [Source("handle", text)]
        if kind == "glob":
            pattern = str(self.base / text)
            found = sorted(p for p in globlib.glob(pattern, recursive=True) if Path(p).is_file())
            if not found:
                self.add(where, f"glob {text!r} matches no file (looked in {self.base})")
            return [Source("file", str(Path(p).resolve())) for p in found[:MAX_ITEMS + 1]]
        path = (self.base / Path(text).expanduser()).resolve()
        if not path.is_file():
            self.add(where, f"file {text} not found (looked at {path})")
            return []
        return [Source("file", str(path))]

    def _hint(self, name: str, raw: dict[str, Any], sources: list[Source], where: str) -> Spec | None:
        declared = (np.dtype(raw["dtype"]) if "dtype" in raw else None, tuple(raw["shape"]) if "shape" in raw else None)
        peeked = None
        first = sources[0] if sources else None
        if first and first.kind == "file" and not raw.get("raw") and first.text.lower().endswith(PEEKABLE):
            try:
                peeked = peek_spec(InputFile(first.text, raw.get("band"), True), name)
            except UserError as exc:
                text = str(exc).removeprefix("job.yaml ")     # peek_spec names the key the run --local way
                key, sep, rest = text.partition(": ")
                self.add(where + key.removeprefix(f"inputs.{name}") if sep and key.startswith(f"inputs.{name}")
                         else where, rest if sep and key.startswith(f"inputs.{name}") else text)
                return None
        if peeked and ((declared[0] is not None and declared[0] != peeked.dtype) or
                       (declared[1] is not None and declared[1] != peeked.shape)):
            self.add(where, f"declared {declared[0] or peeked.dtype}{list(declared[1] or peeked.shape)} "
                            f"but {Path(first.text).name} is {peeked}")
        if peeked:
            return peeked
        return Spec(*declared) if declared[0] is not None and declared[1] is not None else None
