"""Cloud detection, the example workload, in three forms that must agree bit for bit.

The rule (a simplified spectral test in the spirit of Landsat's cloud masks):
a pixel is cloud when it is bright in blue, not vegetation and not snow::

    blue > 2500  and  NDVI = nd(nir, red) < 0.3  and  NDSI = nd(green, swir1) < 0.4

with nd(a, b) = (a - b) / (a + b) in float32. Outputs: ``mask`` (uint8, 255
where cloud, written as PNG) and ``cloud_fraction`` (float64, the mean of the
mask as 0/1).

* ``cloud_graph()`` — the operator graph (inputs: the five bands, uint16);
* ``cloud_detect.wat`` — the WebAssembly program (``WAT_PATH``);
* ``detect_numpy`` — plain numpy, the reference and the benchmark baseline.

``graph_job`` / ``wasm_job`` give the ``job.yaml`` documents that run each
form on a scene file; examples/ holds them written out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .graph import Graph
from .scene import BANDS

WAT_PATH = Path(__file__).with_name("cloud_detect.wat")
BLUE_MIN = 2500
NDVI_MAX = np.float32(0.3)
NDSI_MAX = np.float32(0.4)


def cloud_graph() -> Graph:
    """The detection as an opset-1 graph; band shapes come from the data."""
    def node(name: str, op: str, *inputs: str, **attrs: Any) -> dict[str, Any]:
        return {"name": name, "op": op, "inputs": list(inputs), **attrs}

    return Graph.from_dict({
        "opset": 1,
        "inputs": {band: {"dtype": "uint16"} for band in BANDS},
        "nodes": [
            {"name": "blue_min", "op": "const", "value": BLUE_MIN, "dtype": "uint16"},
            {"name": "ndvi_max", "op": "const", "value": float(NDVI_MAX), "dtype": "float32"},
            {"name": "ndsi_max", "op": "const", "value": float(NDSI_MAX), "dtype": "float32"},
            {"name": "cloud_value", "op": "const", "value": 255, "dtype": "uint8"},
            {"name": "clear_value", "op": "const", "value": 0, "dtype": "uint8"},
            node("bright", "greater", "blue", "blue_min"),
            node("ndvi", "normalized_difference", "nir", "red"),
            node("not_vegetation", "less", "ndvi", "ndvi_max"),
            node("ndsi", "normalized_difference", "green", "swir1"),
            node("not_snow", "less", "ndsi", "ndsi_max"),
            node("bright_not_vegetation", "logical_and", "bright", "not_vegetation"),
            node("cloud", "logical_and", "bright_not_vegetation", "not_snow"),
            node("mask", "where", "cloud", "cloud_value", "clear_value"),
            node("cloud_01", "cast", "cloud", dtype="float64"),
            node("cloud_fraction", "reduce_mean", "cloud_01"),
        ],
        "outputs": ["mask", "cloud_fraction"],
    })


def detect_numpy(blue: np.ndarray, green: np.ndarray, red: np.ndarray, nir: np.ndarray,
                 swir1: np.ndarray) -> tuple[np.ndarray, float]:
    def nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        return (a32 - b32) / (a32 + b32)

    with np.errstate(all="ignore"):
        cloud = (blue > BLUE_MIN) & (nd(nir, red) < NDVI_MAX) & (nd(green, swir1) < NDSI_MAX)
    return np.where(cloud, np.uint8(255), np.uint8(0)), float(cloud.mean())


def _band_inputs(scene_path: str) -> dict[str, Any]:
    return {band: {"path": scene_path, "band": i} for i, band in enumerate(BANDS)}


def graph_job(scene_path: str, outputs_dir: str = "out-graph") -> dict[str, Any]:
    return {"name": "cloud-detection-graph", "inputs": _band_inputs(scene_path),
            "ops": cloud_graph().to_dict(binary=False),
            "outputs": {"dir": outputs_dir, "formats": {"mask": "png"}},
            "limits": {"memory": "1GiB", "cpu_seconds": 60, "wall_seconds": 120}}


def wasm_job(scene_path: str, outputs_dir: str = "out-wasm", program: str = "builtin:cloud_detect.wat"
             ) -> dict[str, Any]:
    return {"name": "cloud-detection-wasm", "inputs": _band_inputs(scene_path),
            "program": program,
            "outputs": {"dir": outputs_dir, "formats": {"mask": "png", "cloud_fraction": "tensor"}},
            "limits": {"memory": "1GiB", "cpu_seconds": 60, "wall_seconds": 120,
                       "fuel": 2_000_000_000, "wasm_memory": "256MiB"}}
