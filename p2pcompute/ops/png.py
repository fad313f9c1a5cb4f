"""Minimal 8-bit grayscale PNG writing and reading (zlib + struct, no Pillow).

``write_gray`` writes a 2-D uint8 or bool array (bool becomes 0/255) with
filter type 0 on every row. The bytes are deterministic for a given zlib.
``read_gray`` reads back what ``write_gray`` wrote (8-bit grayscale,
non-interlaced, any of the five row filters) and rejects everything else.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import UserError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 1 << 16


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_gray(image: np.ndarray) -> bytes:
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * np.uint8(255)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise UserError(f"a PNG output needs a 2-D uint8 or bool tensor, got {image.dtype}{list(image.shape)}")
    height, width = image.shape
    if not (0 < height <= MAX_SIDE and 0 < width <= MAX_SIDE):
        raise UserError(f"a PNG image must be 1..{MAX_SIDE} pixels per side, got {width}x{height}")
    rows = np.zeros((height, width + 1), np.uint8)  # leading 0 = filter type "none"
    rows[:, 1:] = image
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def write_gray(path: str, image: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(encode_gray(image))


def read_gray(data: bytes) -> np.ndarray:
    if not data.startswith(SIGNATURE):
        raise UserError("not a PNG file")
    pos, idat, header = len(SIGNATURE), b"", None
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None or header[2:] != (8, 0, 0, 0, 0):
        raise UserError("only 8-bit grayscale non-interlaced PNGs are supported")
    width, height = header[:2]
    raw = zlib.decompressobj().decompress(idat, (width + 1) * height + 1)
    if len(raw) != (width + 1) * height:
        raise UserError("PNG image data is truncated")
    rows = np.frombuffer(raw, np.uint8).reshape(height, width + 1)
    return _unfilter(rows)


def _unfilter(rows: np.ndarray) -> np.ndarray:
    height, width = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((height, width), np.int32)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        prior = out[y - 1] if y else np.zeros(width, np.int32)
        if kind == 0:
            out[y] = line
        elif kind == 2:
            out[y] = (line + prior) & 0xFF
        elif kind in (1, 3, 4):
            for x in range(width):
                left = out[y, x - 1] if x else 0
                up_left = prior[x - 1] if x else 0
                if kind == 1:
                    pred = left
                elif kind == 3:
                    pred = (left + prior[x]) // 2
                else:
                    p = left + prior[x] - up_left
                    pa, pb, pc = abs(p - left), abs(p - prior[x]), abs(p - up_left)
                    pred = left if pa <= pb and pa <= pc else (prior[x] if pb <= pc else up_left)
                out[y, x] = (line[x] + pred) & 0xFF
        else:
            raise UserError(f"PNG row {y} has unknown filter type {kind}")
    return out.astype(np.uint8)
