"""A deterministic synthetic Landsat-style scene: 5 bands of 16-bit reflectance as a GeoTIFF.

``make_scene(size, seed)`` returns a (5, size, size) uint16 array with bands
blue, green, red, nir, swir1 (``BANDS``), values in reflectance x 10000 as
Landsat surface-reflectance products scale them. Land and water come from a
fractal noise field, vegetation density from a second one, and clouds from a
third, thresholded with soft edges so thin cloud blends with the surface
below it. Sensor noise is added last. The same (size, seed) always gives the
same array with a given numpy (it uses PCG64 and elementary float64 math).

``write_geotiff`` stores it planar (one band per plane), with GeoTIFF
georeferencing tags (30 m pixels, UTM zone 33N) and the band names in the
image description. The default 1024 x 1024 scene is 10.5 MB.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BANDS = ("blue", "green", "red", "nir", "swir1")
# reflectance x 10000 per band (blue, green, red, nir, swir1)
WATER = np.array([600, 500, 300, 150, 80], np.float64)
VEGETATION = np.array([400, 800, 500, 3500, 1800], np.float64)
SOIL = np.array([1200, 1600, 2000, 2600, 3200], np.float64)
CLOUD = np.array([7000, 6900, 6800, 6600, 4500], np.float64)
NOISE = 60.0


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    n = grid.shape[0]
    coords = np.linspace(0.0, n - 1.0, size)
    i0 = np.clip(np.floor(coords).astype(np.int64), 0, n - 2)
    f = coords - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _fractal(rng: np.random.Generator, size: int, base: int, octaves: int) -> np.ndarray:
    field = np.zeros((size, size))
    for octave in range(octaves):
        cells = base * 2 ** octave + 1
        field += _upsample(rng.random((cells, cells)), size) / 2 ** octave
    field -= field.min()
    return field / field.max()


def make_scene(size: int = 1024, seed: int = 5) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(seed))
    land = _fractal(rng, size, 3, 5) > 0.38
    vegetation = _fractal(rng, size, 4, 4)[..., None]
    cloud = _fractal(rng, size, 3, 6)
    opacity = np.clip((cloud - 0.6) / 0.12, 0.0, 1.0)[..., None]
    surface = np.where(land[..., None], vegetation * VEGETATION + (1 - vegetation) * SOIL, WATER)
    value = surface * (1 - opacity) + CLOUD * opacity
    value += rng.standard_normal(value.shape) * NOISE
    return np.clip(np.rint(value), 1, 65535).astype(np.uint16).transpose(2, 0, 1).copy()


def write_geotiff(path: str | Path, scene: np.ndarray) -> None:
    import tifffile

    geokeys = (1, 1, 0, 3,  1024, 0, 1, 1,  1025, 0, 1, 1,  3072, 0, 1, 32633)
    tifffile.imwrite(
        path, scene, photometric="minisblack", planarconfig="separate", metadata=None,
        description=json.dumps({"bands": list(BANDS), "scale": "reflectance x 10000"}),
        extratags=[(33550, "d", 3, (30.0, 30.0, 0.0), False),
                   (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4600000.0, 0.0), False),
                   (34735, "H", len(geokeys), geokeys, False)])
