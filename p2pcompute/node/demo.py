"""What ``p2pcompute demo`` does on a running devnet, step by step, through the control APIs.

Each step uses real daemons and returns what it measured; nothing is made up:
    1. membership: every peer's view of the others (state, capabilities), pings from peer 0;
    2. the scene: a synthetic Landsat-style scene (5 bands, ~10 MB as a GeoTIFF at 1024 px) is
       made here and added on one peer, the *holder*, which pins it and announces it in the DHT;
       another peer, the *submitter*, finds the holder as its provider in the DHT;
    3. compute: an operator graph runs on a peer's sandboxed executor, its large input
       travelling as a CID, and the result is compared with the same graph run here;
    4. the job: cloud detection (the WebAssembly program) over the scene, by its CID, is
       submitted to the submitter, which coordinates it; its placement asks the DHT who holds
       the scene and the task runs there, on the holder (the scene does not travel). The mask
       comes back as a PNG (written to the output dir) and the cloud fraction as a tensor,
       checked against numpy's detection here.
``timed`` records each step's wall time in a dict, for the timings the demo prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .client import ControlClient
from .devnet import Devnet


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Add the wall time of the block to ``timings[step]`` (seconds)."""
    started = time.monotonic()
    try:
        yield
    finally:
        timings[step] = round(timings.get(step, 0.0) + time.monotonic() - started, 3)


def roles(net: Devnet) -> tuple[Any, Any]:
    """(holder, submitter): the peer the scene is added on, and another one the job is submitted to."""
    return net.peers[-1], net.peers[min(2, len(net.peers) - 2)]


def membership_step(net: Devnet) -> dict[str, Any]:
    first = ControlClient(net.peers[0].data_dir)
    rows = first.peers()
    pings = {}
    for row in rows:
        if row["connected"]:
            rtts = sorted(first.ping(row["peer_id"])["rtt_ms"] for _ in range(5))
            pings[row["peer_id"]] = rtts[len(rtts) // 2]
    return {"peer0_view": rows, "median_rtt_ms": pings}


def scene_step(net: Devnet, size: int = 1024, seed: int = 5) -> dict[str, Any]:
    """Make the scene here (and numpy's detection of it), add it on the holder, find it from the submitter."""
    from ..ops import cloud, scene

    holder, submitter = roles(net)
    work = net.root / "demo-scene"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = scene.make_scene(size, seed)
    path = work / "scene.tif"
    scene.write_geotiff(path, data)
    mask, fraction = cloud.detect_numpy(*data)
    made = time.monotonic() - started
    payload = path.read_bytes()
    started = time.monotonic()
    added = ControlClient(holder.data_dir, timeout=120).request("POST", "/v1/add", content=payload).json()
    add_seconds = time.monotonic() - started
    started = time.monotonic()
    found = ControlClient(submitter.data_dir, timeout=60)._call("GET", "/v1/dht/providers",
                                                                 params={"key": added["cid"], "limit": 20})
    lookup_seconds = time.monotonic() - started
    by_peer = {str(p.status["peer_id"]): p.index for p in net.peers}
    providers = sorted(by_peer.get(row["peer_id"], -1) for row in found["providers"])
    return {"cid": added["cid"], "bytes": len(payload), "size_px": size, "holder": holder.index,
            "submitter": submitter.index, "providers_found_by_submitter": providers,
            "made_seconds": round(made, 3), "add_seconds": round(add_seconds, 3),
            "lookup_seconds": round(lookup_seconds, 3),
            "expected_fraction": fraction, "expected_mask_sha256": hashlib.sha256(mask.tobytes()).hexdigest(),
            "sha256": hashlib.sha256(payload).hexdigest()}


def compute_step(net: Devnet) -> dict[str, Any]:
    from .. import tensor as t

    peer = net.peers[min(2, len(net.peers) - 1)]
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    y = t.from_numpy(a, name="a").matmul(t.from_numpy(b, name="b")).add(1.0).relu().reduce_sum()
    started = time.monotonic()
    remote = float(y.compute(ControlClient(peer.data_dir)))
    seconds = time.monotonic() - started
    local = float(y.compute())
    return {"graph": "matmul(a, b) + 1 -> relu -> reduce_sum, a and b 256x256 float64 (512 KiB: sent as CIDs)",
            "peer": peer.index, "remote": remote, "local": local, "identical": remote == local,
            "seconds": round(seconds, 3)}


SCENE_JOB = """
name: demo-clouds
inputs:
  blue: {uri: "ipfs://CID", band: 0}
  green: {uri: "ipfs://CID", band: 1}
  red: {uri: "ipfs://CID", band: 2}
  nir: {uri: "ipfs://CID", band: 3}
  swir1: {uri: "ipfs://CID", band: 4}
stages:
- name: detect
  program: builtin:cloud_detect.wat
  inputs: {blue: inputs.blue, green: inputs.green, red: inputs.red, nir: inputs.nir, swir1: inputs.swir1}
  outputs:
    formats: {mask: png, cloud_fraction: tensor}
  limits: {fuel: 20000000000, wasm_memory: 512MiB}
"""


def job_step(net: Devnet, found: dict[str, Any], out_dir: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Cloud detection over the scene of ``scene_step``, submitted to the submitter; the mask PNG to ``out_dir``."""
    from ..client import Client
    from ..ops import tensor_format

    holder, submitter = roles(net)
    client = ControlClient(submitter.data_dir, timeout=60)
    job, described, seconds = _run_job(client, SCENE_JOB.replace("CID", found["cid"]), net.root, timeout)
    by_peer = {str(p.status["peer_id"]): p.index for p in net.peers}
    ran = [(by_peer.get(a["peer"], -1), a.get("outcome", "")) for t in described["tasks"] for a in t["attempts"]]
    ran_on = [peer for peer, outcome in ran if outcome == "ok"]
    out = {"job_id": job["job_id"], "submitted_to": submitter.index, "holder": holder.index,
           "state": described["state"], "reason": described["reason"], "tasks": job["tasks"],
           "attempts": [{"peer": p, "outcome": o} for p, o in ran], "ran_on": ran_on[0] if ran_on else None,
           "ran_on_holder": ran_on == [holder.index], "seconds": round(seconds, 2), "outputs": {}}
    if described["state"] != "done":
        out["correct"] = False
        return out
    started = time.monotonic()
    for _, output, data in Client(submitter.data_dir).job(job["job_id"]).result_bytes(described):
        name = output.split("/")[0]
        if name == "mask":
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / "cloud-mask.png"
            path.write_bytes(data)
            out["mask_png"] = str(path.resolve())
            out["mask_bytes"] = len(data)
        elif name == "cloud_fraction":
            out["cloud_fraction"] = float(tensor_format.decode(data))
    out["outputs"] = {output: cid for _, output, cid in described["outputs"]}
    out["results_seconds"] = round(time.monotonic() - started, 3)
    out["numpy_fraction"] = found["expected_fraction"]
    out["correct"] = "cloud_fraction" in out and abs(out["cloud_fraction"] - found["expected_fraction"]) < 1e-9 \
        and "mask_png" in out and _png_mask_sha256(Path(out["mask_png"])) == found["expected_mask_sha256"]
    return out


def _png_mask_sha256(path: Path) -> str | None:
    """The SHA-256 of the mask's pixels decoded from the PNG (to compare with numpy's mask), or None."""
    from ..errors import P2PComputeError
    from ..ops import png

    try:
        pixels = png.read_gray(path.read_bytes())
    except (OSError, ValueError, P2PComputeError):
        return None
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def _run_job(client: ControlClient, text: str, base: Path, timeout: float) -> tuple[dict, dict, float]:
    """Submit ``text`` and wait until it ends: (submitted summary, final description, seconds)."""
    from ..client import Client, JobFailed

    jobs = Client(client.data_dir, timeout=60)
    started = time.monotonic()
    job = jobs.submit(text, base=base)
    try:
        job.wait(timeout=timeout, poll=0.2)
    except JobFailed:
        pass  # the caller reports the state and reason
    seconds = time.monotonic() - started
    described = job.describe()
    return {"job_id": job.id, "tasks": len(described["tasks"])}, described, seconds


def _tasks_per_peer(net: Devnet, described: dict) -> dict[int, int]:
    by_peer = {str(p.status["peer_id"]): p.index for p in net.peers}
    counts: dict[int, int] = {}
    for task in described["tasks"]:
        for attempt in task["attempts"]:
            if attempt.get("outcome") == "ok":
                peer = by_peer.get(attempt["peer"], -1)
                counts[peer] = counts.get(peer, 0) + 1
    return counts


PIPELINE_JOB = """
name: demo-pipeline
inputs:
  blue: {glob: "scenes/*.tif", band: 0}
  green: {glob: "scenes/*.tif", band: 1}
  red: {glob: "scenes/*.tif", band: 2}
  nir: {glob: "scenes/*.tif", band: 3}
  swir1: {glob: "scenes/*.tif", band: 4}
stages:
- name: detect
  program: builtin:cloud_detect.wat
  inputs: {blue: inputs.blue, green: inputs.green, red: inputs.red, nir: inputs.nir, swir1: inputs.swir1}
  map: {over: [inputs.blue, inputs.green, inputs.red, inputs.nir, inputs.swir1]}
  outputs:
    formats: {mask: tensor, cloud_fraction: tensor}
  limits: {fuel: 2000000000, wasm_memory: 256MiB}
- name: masks
  inputs: {mask: stages.detect.outputs.mask}
  map: {over: stages.detect.outputs.mask}
  when: detect.cloud_fraction > 0.5
  ops:
    opset: 1
    inputs: {mask: {dtype: uint8}}
    nodes:
    - {name: cloud_mask, op: cast, inputs: [mask], dtype: uint8}
    outputs: [cloud_mask]
  outputs:
    formats: {cloud_mask: png}
"""


def pipeline_step(net: Devnet, scenes: int = 100, size: int = 64, timeout: float = 600.0) -> dict[str, Any]:
    """The two-stage pipeline over ``scenes`` small scenes: masks only where detect's cloud fraction > 0.5."""
    from ..ops import cloud, scene

    work = net.root / "demo-pipeline"
    (work / "scenes").mkdir(parents=True, exist_ok=True)
    cloudy = set()
    for i in range(scenes):
        data = scene.make_scene(size, 100 + i)
        scene.write_geotiff(work / "scenes" / f"scene-{i:03d}.tif", data)
        if cloud.detect_numpy(*data)[1] > 0.5:
            cloudy.add(f"{i:05d}")
    coordinator = net.peers[min(1, len(net.peers) - 1)]
    client = ControlClient(coordinator.data_dir, timeout=60)
    job, described, seconds = _run_job(client, PIPELINE_JOB, work, timeout)
    states: dict[str, dict[str, int]] = {}
    masked = set()
    for task in described["tasks"]:
        stage = states.setdefault(task["stage"], {})
        stage[task["state"]] = stage.get(task["state"], 0) + 1
        if task["stage"] == "masks" and task["state"] == "done":
            masked.add(task["task"].split("/")[1])
    return {"job_id": job["job_id"], "coordinator": coordinator.index, "state": described["state"],
            "reason": described["reason"], "scenes": scenes, "tasks": job["tasks"], "seconds": round(seconds, 2),
            "stages": states, "tasks_per_peer": _tasks_per_peer(net, described),
            "correct": described["state"] == "done" and masked == cloudy, "cloudy_scenes": len(cloudy)}
