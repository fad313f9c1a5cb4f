"""Job files for the job.yaml v1 tests: small graphs, a workspace with files, CIDs."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import yaml

from p2pcompute.ops.scene import make_scene, write_geotiff
from p2pcompute.storage.cid import Cid

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MEAN = {"opset": 1, "inputs": {"x": {}}, "nodes": [{"name": "m", "op": "reduce_mean", "inputs": ["x"]}],
        "outputs": ["m"]}
SCALE = {"opset": 1, "inputs": {"x": {}, "m": {}}, "nodes": [{"name": "y", "op": "mul", "inputs": ["x", "m"]}],
         "outputs": ["y"]}


def cid(i: int = 0) -> str:
    return str(Cid.of(f"item {i}".encode()))


def graph(g: dict) -> dict:
    return copy.deepcopy(g)


def workspace(tmp: Path, scenes: int = 3) -> Path:
    """Files the example jobs and the tests read: x/*.npy, a.npy, b.npy, scenes/*.tif, scene.tif."""
    (tmp / "x").mkdir(exist_ok=True)
    for i in range(scenes):
        np.save(tmp / "x" / f"x{i}.npy", np.full((4, 4), i, dtype=np.float32))
    np.save(tmp / "a.npy", np.zeros((300, 200)))
    np.save(tmp / "b.npy", np.zeros((200, 250)))
    (tmp / "scenes").mkdir(exist_ok=True)
    for i in range(scenes):
        write_geotiff(tmp / "scenes" / f"scene-{i}.tif", make_scene(32, seed=i))
    write_geotiff(tmp / "scene.tif", make_scene(32, seed=5))
    for f in EXAMPLES.glob("*.job.yaml"):
        shutil.copy(f, tmp / f.name)
    return tmp


def pipeline() -> dict:
    """Two mapped stages over x/*.npy, the second only where the first's mean exceeds 0.5."""
    return {"name": "pipe", "inputs": {"x": "x/*.npy"}, "stages": [
        {"name": "stats", "map": {"over": "inputs.x"}, "ops": graph(MEAN)},
        {"name": "scaled", "inputs": {"x": "inputs.x", "m": "stages.stats.outputs.m"},
         "map": {"over": ["inputs.x", "stages.stats.outputs.m"]}, "when": "stats.m > 0.5", "ops": graph(SCALE)}]}


def write(tmp: Path, doc: dict, name: str = "job.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
