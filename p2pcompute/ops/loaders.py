"""Input files to arrays, arrays to output files.

Inputs: ``.tensor`` (our format), ``.npy`` (never pickles), ``.tif``/``.tiff``
(tifffile; a GeoTIFF's georeferencing tags are ignored). ``band=N`` takes
band N of a multi-band image (axis 0 of a 3-D array, as a planar GeoTIFF
stores it). Every loader checks the file size against a cap first. These run
inside the sandboxed worker, so a hostile file can at worst fail its own task.

Outputs: ``tensor``, ``npy``, ``png`` (2-D uint8/bool) and ``raw`` (a file a
WebAssembly program wrote, kept as it is). ``describe`` gives the metadata a
result reports: file, bytes, sha256, and for arrays dtype, shape and, for
arrays of at most 16 elements, the values.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from . import png, tensor_format

MAX_INPUT_BYTES = 4 << 30
SMALL = 16


def load_array(path: str | os.PathLike, band: int | None = None,
               max_bytes: int = MAX_INPUT_BYTES, cache: dict[Path, np.ndarray] | None = None) -> np.ndarray:
    """The array in a file (one band of it if ``band``); ``cache`` avoids re-reading a
    multi-band file once per band within one task."""
    path = Path(path)
    if cache is not None and path in cache:
        return _band(cache[path], band, path)
    array = _read(path, max_bytes)
    if cache is not None:
        cache[path] = array
    return _band(array, band, path)


def _read(path: Path, max_bytes: int) -> np.ndarray:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"input {path}: {exc.strerror}") from None
    if size > max_bytes:
        raise UserError(f"input {path} is {size} bytes, more than the {max_bytes}-byte limit")
    suffix = path.suffix.lower()
    try:
        if suffix == ".tensor":
            array = tensor_format.read_file(path, max_bytes=max_bytes)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile
            array = tifffile.imread(path)
        else:
            raise UserError(f"input {path}: unknown file type {suffix!r} (use .tensor, .npy, .tif)")
    except (UserError, MemoryError):
        raise
    except Exception as exc:  # parsers of hostile files raise many types
        raise UserError(f"input {path} could not be read: {type(exc).__name__}: {exc}") from None
    return array


def _band(array: np.ndarray, band: int | None, path: Path) -> np.ndarray:
    if band is None:
        return array
    if array.ndim != 3:
        raise UserError(f"input {path}: band={band} needs a 3-D (bands, rows, cols) image, "
                        f"got shape {list(array.shape)}")
    if not 0 <= band < array.shape[0]:
        raise UserError(f"input {path}: band {band} does not exist (it has {array.shape[0]} bands)")
    return np.ascontiguousarray(array[band])


def write_output(directory: Path, name: str, array: np.ndarray, fmt: str) -> Path:
    if fmt == "png":
        path = directory / f"{name}.png"
        png.write_gray(str(path), array)
    elif fmt == "npy":
        path = directory / f"{name}.npy"
        np.save(path, array, allow_pickle=False)
    elif fmt == "tensor":
        path = directory / f"{name}.tensor"
        tensor_format.write_file(path, array)
    else:
        raise UserError(f"output {name!r}: format {fmt!r} cannot hold a tensor")
    return path


def describe_bytes(file: str, data: bytes, array: np.ndarray) -> dict[str, Any]:
    """Metadata of an output carried inline (``data``) instead of in a file."""
    info: dict[str, Any] = {"file": file, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                            "data": data}
    return _add_array(info, array)


def _add_array(info: dict[str, Any], array: np.ndarray | None) -> dict[str, Any]:
    if array is not None:
        info.update(dtype=array.dtype.name, shape=list(array.shape))
        if array.size <= SMALL:
            info["value"] = array.tolist()
    return info


def describe(path: Path, array: np.ndarray | None = None) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    info: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return _add_array(info, array)
