"""DataRef: one name for data from any source, with what to check it against.

A ``DataRef`` holds:

* ``uri`` — where the bytes are, in canonical form:

  ========================================  ======================================
  ``ipfs://CID[/path]``                     our network (local store, then bitswap)
  ``http(s)://...``                         a web server (headers, byte ranges)
  ``http(s)://host/ipfs/CID[/p]?format=car`` a trustless gateway (CAR, verified)
  ``kubo-rpc://host:port/CID[/path]``       a user's kubo daemon through its RPC API
  ``file:///abs/path``                      a local file (a bare path is turned into this)
  ========================================  ======================================

  ``parse(text, ipfs_api=BASE)`` turns ``ipfs://CID`` into the ``kubo-rpc``
  form for ``--ipfs-api http://127.0.0.1:5001``.
* ``headers`` — extra HTTP headers. Headers that carry secrets
  (Authorization, Cookie, ...) are refused: a ref is shared and stored, so it
  names a secret instead, in ``credentials``: ``env:NAME`` (an environment
  variable) or ``file:NAME`` (a file in ``<data dir>/credentials/``). The
  secret is sent as the ``Authorization`` header (``Bearer`` is added when it
  has no scheme).
* ``range`` — a byte range ``a-b`` (inclusive, as HTTP) or ``a-`` (to the end).
* ``expect`` — a CID or ``sha256:<64 hex>`` the bytes must match.

Parsing is strict and every refusal is a ``UserError`` that names the field.
``to_json``/``from_json`` and ``to_cbor``/``from_cbor`` are exact round trips.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import cbor2

from ..errors import P2PComputeError, UserError
from .cid import Cid

MAX_URI = 4096
MAX_HEADERS = 32
MAX_HEADER_VALUE = 4096
MAX_CBOR = 64 * 1024
KINDS = ("ipfs", "http", "gateway", "kubo", "file")
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
_CRED = re.compile(r"^(env|file):([A-Za-z_][A-Za-z0-9_.-]{0,127})$")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOSTPORT = re.compile(r"^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]{2,45}\]:[0-9]{1,5}$")


@dataclass(frozen=True, order=True)
class ByteRange:
    """Bytes ``start..end`` inclusive (``end`` None: to the end of the data)."""

    start: int
    end: int | None = None

    def __post_init__(self) -> None:
        if type(self.start) is not int or self.start < 0:
            raise UserError("range: the first byte must be a non-negative integer")
        if self.end is not None and (type(self.end) is not int or self.end < self.start):
            raise UserError(f"range: the last byte must be at least the first ({self.start})")

    @classmethod
    def parse(cls, text: str) -> ByteRange:
        m = re.fullmatch(r"([0-9]{1,19})-([0-9]{1,19})?", text.strip()) if isinstance(text, str) else None
        if m is None:
            raise UserError(f"range {text!r}: write FIRST-LAST (inclusive byte offsets, e.g. 0-1023) or FIRST-")
        return cls(int(m[1]), None if m[2] is None else int(m[2]))

    @property
    def length(self) -> int | None:
        return None if self.end is None else self.end - self.start + 1

    def header(self) -> str:
        """The HTTP ``Range`` header value."""
        return f"bytes={self}"

    def clamp(self, size: int) -> tuple[int, int] | None:
        """``(offset, length)`` of this range within ``size`` bytes; None if it starts past the end."""
        if self.start >= size and size:
            return None
        end = size - 1 if self.end is None else min(self.end, size - 1)
        return self.start, max(0, end - self.start + 1)

    def __str__(self) -> str:
        return f"{self.start}-" if self.end is None else f"{self.start}-{self.end}"


@dataclass(frozen=True)
class DataRef:
    uri: str
    headers: tuple[tuple[str, str], ...] = ()
    credentials: str | None = None
    range: ByteRange | None = None
    expect: str | None = None

    def __post_init__(self) -> None:
        _classify(self.uri)  # the canonical form is checked again, so hand-built refs are strict too
        if len(self.headers) > MAX_HEADERS:
            raise UserError(f"headers: at most {MAX_HEADERS}")
        for name, value in self.headers:
            _check_header(name, value)
        if self.credentials is not None and not (isinstance(self.credentials, str) and _CRED.match(self.credentials)):
            raise UserError(f"credentials {self.credentials!r}: write env:VARIABLE or file:NAME "
                            "(a file in <data dir>/credentials/), never the secret itself")
        if self.expect is not None:
            _check_expect(self.expect)
        if self.range is not None and not isinstance(self.range, ByteRange):
            raise UserError("range must be a ByteRange")

    # --- building ----------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, ipfs_api: str | None = None, headers: dict[str, str] | None = None,
              credentials: str | None = None, range: str | None = None, expect: str | None = None,
              cwd: str | os.PathLike | None = None) -> DataRef:
        """A ref from user text (a URI or a local path) and options; ``UserError`` if anything is off."""
        uri = canonical_uri(text, cwd=cwd)
        if ipfs_api is not None:
            if not uri.startswith("ipfs://"):
                raise UserError("--ipfs-api applies to ipfs://CID references only")
            uri = "kubo-rpc://" + _api_hostport(ipfs_api) + uri[len("ipfs:/"):]
        return cls(uri, tuple((headers or {}).items()), credentials,
                   None if range is None else ByteRange.parse(range), expect)

    # --- what it names -----------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return _classify(self.uri)[0]

    @property
    def cid(self) -> Cid | None:
        """The root CID for ipfs, gateway and kubo refs."""
        return _classify(self.uri)[1]

    @property
    def path(self) -> tuple[str, ...]:
        """Path segments under the root CID (``ipfs://CID/a/b`` -> ("a", "b"))."""
        return _classify(self.uri)[2]

    @property
    def api_base(self) -> str:
        """``http://host:port`` of a kubo RPC API (kubo refs)."""
        if self.kind != "kubo":
            raise UserError(f"{self.uri} is not a kubo-rpc:// reference")
        return "http://" + urlsplit(self.uri).netloc

    @property
    def file_path(self) -> Path:
        if self.kind != "file":
            raise UserError(f"{self.uri} is not a file:// reference")
        return Path(unquote(urlsplit(self.uri).path))

    @property
    def expect_cid(self) -> Cid | None:
        return None if self.expect is None or self.expect.startswith("sha256:") else Cid.parse(self.expect)

    @property
    def expect_sha256(self) -> str | None:
        return self.expect[7:] if self.expect is not None and self.expect.startswith("sha256:") else None

    # --- forms -----------------------------------------------------------------------------

    def to_json(self) -> dict:
        out: dict = {"uri": self.uri}
        if self.headers:
            out["headers"] = [[k, v] for k, v in self.headers]
        if self.credentials is not None:
            out["credentials"] = self.credentials
        if self.range is not None:
            out["range"] = str(self.range)
        if self.expect is not None:
            out["expect"] = self.expect
        return out

    @classmethod
    def from_json(cls, data: object) -> DataRef:
        """From ``to_json``'s form, or a plain URI string (then it must already be canonical)."""
        if isinstance(data, str):
            data = {"uri": data}
        if not isinstance(data, dict):
            raise UserError("a data reference is a URI string or an object with \"uri\"")
        unknown = set(data) - {"uri", "headers", "credentials", "range", "expect"}
        if unknown:
            raise UserError(f"data reference: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        uri, headers, rng = data.get("uri"), data.get("headers", []), data.get("range")
        if not isinstance(uri, str):
            raise UserError("data reference: \"uri\" must be a string")
        if isinstance(headers, dict):
            headers = list(headers.items())
        if not isinstance(headers, list) or not all(
                isinstance(h, (list, tuple)) and len(h) == 2 and all(isinstance(x, str) for x in h) for h in headers):
            raise UserError("data reference: \"headers\" must be a list of [name, value] strings")
        if rng is not None and not isinstance(rng, str):
            raise UserError("data reference: \"range\" must be a string FIRST-LAST")
        for key in ("credentials", "expect"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise UserError(f"data reference: \"{key}\" must be a string")
        ref = cls(uri, tuple((k, v) for k, v in headers), data.get("credentials"),
                  None if rng is None else ByteRange.parse(rng), data.get("expect"))
        if canonical_uri(uri) != uri:
            raise UserError(f"data reference: {uri!r} is not in canonical form ({canonical_uri(uri)!r})")
        return ref

    def to_cbor(self) -> bytes:
        return cbor2.dumps(self.to_json())

    @classmethod
    def from_cbor(cls, data: bytes) -> DataRef:
        if len(data) > MAX_CBOR:
            raise UserError(f"data reference of {len(data)} bytes is over {MAX_CBOR}")
        try:
            value = cbor2.loads(data)
        except Exception:  # cbor2 raises several types on garbage
            raise UserError("data reference is not valid CBOR") from None
        return cls.from_json(value)

    def __str__(self) -> str:
        return self.uri


# --- URIs ---------------------------------------------------------------------------------------


def canonical_uri(text: str, *, cwd: str | os.PathLike | None = None) -> str:
    """The canonical URI for user text; a bare path becomes an absolute ``file://`` URI."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_URI:
        raise UserError(f"a data reference is a URI or path of 1 to {MAX_URI} characters")
    text = text.strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not scheme:
        if any(c in text for c in "\r\n\x00"):
            raise UserError("a path must not contain control characters")
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = Path(cwd or os.getcwd()) / path
        return "file://" + quote(os.path.normpath(path))
    rest = text.split("://", 1)[1]
    if scheme in ("ipfs", "kubo-rpc"):
        text = scheme + "://" + rest.rstrip("/")
    elif scheme in ("http", "https", "file"):
        text = scheme + "://" + rest
    _classify(text)
    return text


def _classify(uri: str) -> tuple[str, Cid | None, tuple[str, ...]]:
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI:
        raise UserError(f"a data reference URI has 1 to {MAX_URI} characters")
    if any(ord(c) < 0x21 or c == "\x7f" for c in uri):
        raise UserError(f"{uri[:80]!r}: URIs must not contain spaces or control characters (percent-encode them)")
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise UserError(f"{uri[:80]!r} has no scheme: use ipfs://, http(s)://, kubo-rpc://, file:// or a path")
    if scheme == "ipfs":
        cid, path = _cid_path(rest, uri)
        return "ipfs", cid, path
    if scheme == "kubo-rpc":
        hostport, _, tail = rest.partition("/")
        if not _HOSTPORT.match(hostport):
            raise UserError(f"{uri[:80]!r}: write kubo-rpc://HOST:PORT/CID[/path]")
        cid, path = _cid_path(tail, uri)
        return "kubo", cid, path
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        if not parts.hostname:
            raise UserError(f"{uri[:80]!r}: an http(s) URL needs a host")
        try:
            parts.port
        except ValueError:
            raise UserError(f"{uri[:80]!r}: bad port") from None
        if parts.path.startswith("/ipfs/") and parse_qs(parts.query).get("format") == ["car"]:
            cid, path = _cid_path(parts.path[len("/ipfs/"):], uri)
            return "gateway", cid, path
        return "http", None, ()
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UserError(f"{uri[:80]!r}: write file:///absolute/path")
        return "file", None, ()
    raise UserError(f"{uri[:80]!r}: unknown scheme {scheme!r}; use ipfs://, http(s)://, kubo-rpc://, file://")


def _cid_path(text: str, uri: str) -> tuple[Cid, tuple[str, ...]]:
    first, _, tail = text.partition("/")
    try:
        cid = Cid.parse(first) if first else None
    except P2PComputeError as exc:
        raise UserError(f"{uri[:80]!r}: {exc}") from None
    if cid is None:
        raise UserError(f"{uri[:80]!r}: no CID after the scheme")
    path = tuple(unquote(p) for p in tail.split("/")) if tail else ()
    if any(p in ("", ".", "..") or "/" in p for p in path):
        raise UserError(f"{uri[:80]!r}: path segments must be plain names (no empty, '.' or '..')")
    return cid, path


def _api_hostport(base: str) -> str:
    parts = urlsplit(base.strip())
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise UserError(f"--ipfs-api {base!r}: give the RPC API base, e.g. http://127.0.0.1:5001")
    try:
        port = parts.port or 5001
    except ValueError:
        raise UserError(f"--ipfs-api {base!r}: bad port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def _check_header(name: object, value: object) -> None:
    if not isinstance(name, str) or not _TOKEN.match(name):
        raise UserError(f"header name {name!r} is not a valid HTTP token")
    if name.lower() in SECRET_HEADERS:
        raise UserError(f"header {name}: secrets do not go into a data reference; put it in an environment "
                        "variable or <data dir>/credentials/NAME and give credentials=env:VAR or file:NAME")
    if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\x00"):
        raise UserError(f"header {name}: the value must be one line of at most {MAX_HEADER_VALUE} characters")


def _check_expect(text: object) -> None:
    if not isinstance(text, str):
        raise UserError("expect must be a CID or sha256:<64 lowercase hex digits>")
    if text.startswith("sha256:"):
        if not _SHA256.match(text):
            raise UserError(f"expect {text[:80]!r}: write sha256: followed by 64 lowercase hex digits")
        return
    try:
        Cid.parse(text)
    except P2PComputeError as exc:
        raise UserError(f"expect: give a CID or sha256:<hex>; {exc}") from None


def resolve_credentials(ref: DataRef, data_dir: str | os.PathLike | None,
                        environ: dict[str, str] | None = None) -> dict[str, str]:
    """The headers to send for ``ref``: its own plus ``Authorization`` from its credentials."""
    headers = dict(ref.headers)
    if ref.credentials is None:
        return headers
    kind, name = ref.credentials.split(":", 1)
    if kind == "env":
        secret = (os.environ if environ is None else environ).get(name)
        if secret is None:
            raise UserError(f"credentials env:{name}: the environment variable {name} is not set")
    else:
        if data_dir is None:
            raise UserError(f"credentials file:{name} needs a data dir")
        path = Path(data_dir) / "credentials" / name
        try:
            secret = path.read_text()
        except OSError as exc:
            raise UserError(f"credentials file:{name}: cannot read {path}: {exc.strerror or exc}") from None
    secret = secret.strip()
    if not secret or any(c in secret for c in "\r\n\x00"):
        raise UserError(f"credentials {ref.credentials}: the secret must be one non-empty line")
    headers["Authorization"] = secret if " " in secret else f"Bearer {secret}"
    return headers
