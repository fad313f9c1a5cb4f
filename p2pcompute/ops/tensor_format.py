"""The self-describing tensor format, on the wire and in the store.

Layout (all header fields little-endian)::

    offset  size     field
    0       4        magic b"P2PT"
    4       1        format version (1)
    5       1        dtype code (see DTYPE_CODES)
    6       1        byte order of the data: 0 little-endian, 1 big-endian
    7       1        ndim (0..32)
    8       8*ndim   shape, one unsigned 64-bit integer per axis
    8+8*ndim ...     the elements, C order, exactly prod(shape) * itemsize bytes

``encode`` is canonical: it always writes little-endian, C-ordered data, so the
same tensor always gives the same bytes and therefore the same CID when the
store adds it. ``decode`` also accepts big-endian data (and byte-swaps it).
Booleans are one byte each, 0 or 1; any other byte value is rejected.

``decode`` takes untrusted bytes: every field is checked (magic, version,
dtype code, byte order, ndim, the exact data length, a size cap) and anything
wrong raises ``WireError`` with a message saying what; it never crashes and
never allocates more than the cap. The decoded array is a zero-copy,
read-only view of the buffer when the data is little-endian.

The fixed header also makes the format easy to read from WebAssembly
(see ``cloud_detect.wat``).
"""

from __future__ import annotations

import os
import struct

import numpy as np

from ..errors import WireError

MAGIC = b"P2PT"
VERSION = 1
MAX_NDIM = 32
DEFAULT_MAX_BYTES = 1 << 32  # 4 GiB of element data
_MAX_EXTENT = 1 << 48

DTYPE_CODES: dict[str, int] = {
    "bool": 1,
    "int8": 2,
    "uint8": 3,
    "int16": 4,
    "uint16": 5,
    "int32": 6,
    "uint32": 7,
    "int64": 8,
    "uint64": 9,
    "float16": 10,
    "float32": 11,
    "float64": 12,
}
_BY_CODE = {code: np.dtype(name) for name, code in DTYPE_CODES.items()}
_FIXED = struct.Struct("<4sBBBB")


def dtype_code(dtype: np.dtype) -> int:
    """The format's code for ``dtype``; ``WireError`` if it has none."""
    code = DTYPE_CODES.get(np.dtype(dtype).name)
    if code is None:
        raise WireError(f"tensor: dtype {np.dtype(dtype)} is not supported "
                        f"(supported: {', '.join(DTYPE_CODES)})")
    return code


def encode_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    if len(shape) > MAX_NDIM:
        raise WireError(f"tensor: {len(shape)} dimensions, at most {MAX_NDIM} allowed")
    head = _FIXED.pack(MAGIC, VERSION, dtype_code(dtype), 0, len(shape))
    return head + struct.pack(f"<{len(shape)}Q", *shape)


def encode(array: np.ndarray) -> bytes:
    """Canonical bytes of ``array`` (little-endian, C order)."""
    array = np.asarray(array)
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return encode_header(array.dtype, array.shape) + data.tobytes()


def decode_header(data: bytes | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES
                  ) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check a header; return (dtype with byte order, shape, header length)."""
    view = memoryview(data)
    if len(view) < _FIXED.size:
        raise WireError(f"tensor: {len(view)} bytes is too short for a header ({_FIXED.size} needed)")
    magic, version, code, order, ndim = _FIXED.unpack_from(view, 0)
    if magic != MAGIC:
        raise WireError(f"tensor: bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WireError(f"tensor: format version {version} is not supported (only {VERSION})")
    if code not in _BY_CODE:
        raise WireError(f"tensor: unknown dtype code {code}")
    if order not in (0, 1):
        raise WireError(f"tensor: byte order must be 0 (little) or 1 (big), got {order}")
    if ndim > MAX_NDIM:
        raise WireError(f"tensor: {ndim} dimensions, at most {MAX_NDIM} allowed")
    header_len = _FIXED.size + 8 * ndim
    if len(view) < header_len:
        raise WireError(f"tensor: truncated shape ({len(view)} bytes, header needs {header_len})")
    shape = struct.unpack_from(f"<{ndim}Q", view, _FIXED.size)
    dtype = _BY_CODE[code].newbyteorder("<" if order == 0 else ">")
    nbytes, extent = dtype.itemsize, dtype.itemsize
    for dim in shape:
        nbytes *= dim
        extent *= max(dim, 1)  # numpy refuses shapes whose non-zero sizes overflow, even if empty
        if nbytes > max_bytes or extent > _MAX_EXTENT:
            raise WireError(f"tensor: shape {tuple(shape)} of {dtype.name} exceeds the "
                            f"{max_bytes}-byte limit")
    return dtype, tuple(shape), header_len


def decode(data: bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """The array in ``data``; ``WireError`` for anything malformed."""
    dtype, shape, header_len = decode_header(data, max_bytes=max_bytes)
    expected = dtype.itemsize * int(np.prod(shape, dtype=np.uint64))
    got = len(data) - header_len
    if got != expected:
        raise WireError(f"tensor: shape {shape} of {dtype.name} needs {expected} data bytes, got {got}")
    array = np.frombuffer(data, dtype=dtype, offset=header_len, count=expected // dtype.itemsize)
    if dtype.byteorder == ">":
        array = array.astype(dtype.newbyteorder("="))
    if dtype.kind == "b":
        raw = array.view(np.uint8)
        if raw.size and raw.max() > 1:
            raise WireError("tensor: bool data holds bytes other than 0 and 1")
    return array.reshape(shape)


def write_file(path: str | os.PathLike, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(encode(array))


def read_file(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Decode a tensor file, refusing files larger than the cap before reading them."""
    size = os.stat(path).st_size
    if size > max_bytes + 8 + 8 * MAX_NDIM:
        raise WireError(f"tensor: file of {size} bytes exceeds the {max_bytes}-byte limit")
    with open(path, "rb") as f:
        return decode(f.read(), max_bytes=max_bytes)
