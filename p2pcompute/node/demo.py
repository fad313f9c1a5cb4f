"""What ``p2pcompute demo`` does on a running devnet, step by step, through the control APIs.

Each step uses real daemons and returns what it measured; nothing is made up:
    1. membership: every peer's view of the others (state, capabilities), pings from peer 0;
    2. data: a random file added on one peer is fetched by another (DHT providers, bitswap)
       and its bytes are checked against the original's SHA-256;
    3. compute: an operator graph runs on a peer's sandboxed executor, its large input
       travelling as a CID, and the result is compared with the same graph run here;
    4. a job: cloud detection (the WebAssembly program) mapped over synthetic scenes is
       submitted to one peer, which plans it, places its tasks on peers, gathers the masks
       and cloud fractions as CIDs; each fraction is checked against numpy's detection here.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from pathlib import Path

import numpy as np

from .client import ControlClient
from .devnet import Devnet


def membership_step(net: Devnet) -> dict[str, Any]:
    first = ControlClient(net.peers[0].data_dir)
    rows = first.peers()
    pings = {}
    for row in rows:
        if row["connected"]:
            rtts = sorted(first.ping(row["peer_id"])["rtt_ms"] for _ in range(5))
            pings[row["peer_id"]] = rtts[len(rtts) // 2]
    return {"peer0_view": rows, "median_rtt_ms": pings}


def data_step(net: Devnet, size: int = 2 << 20) -> dict[str, Any]:
    adder, getter = net.peers[1], net.peers[-1]
    payload = os.urandom(size)
    added = ControlClient(adder.data_dir).request("POST", "/v1/add", content=payload).json()
    client = ControlClient(getter.data_dir, timeout=120)
    started = time.monotonic()
    fetched = client._call("POST", "/v1/fetch", {"cid": added["cid"]})
    seconds = time.monotonic() - started
    copy = client.request("GET", "/v1/cat", params={"cid": added["cid"]}).content
    return {"cid": added["cid"], "bytes": size, "added_on": adder.index, "fetched_by": getter.index,
            "providers_found": len(fetched["providers"]), "blocks": fetched["blocks"],
            "seconds": round(seconds, 3),
            "intact": hashlib.sha256(copy).digest() == hashlib.sha256(payload).digest()}


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


DEMO_JOB = """
name: demo-clouds
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
    formats: {mask: png, cloud_fraction: tensor}
  limits: {fuel: 2000000000, wasm_memory: 256MiB}
"""


def job_step(net: Devnet, scenes: int = 4, size: int = 256, timeout: float = 120.0) -> dict[str, Any]:
    from ..ops import cloud, scene, tensor_format

    work = net.root / "demo-job"
    (work / "scenes").mkdir(parents=True, exist_ok=True)
    expected = {}
    for i in range(scenes):
        data = scene.make_scene(size, i)
        scene.write_geotiff(work / "scenes" / f"scene-{i}.tif", data)
        expected[f"{i:05d}"] = float(cloud.detect_numpy(*data)[1])
    coordinator = net.peers[min(2, len(net.peers) - 1)]
    client = ControlClient(coordinator.data_dir, timeout=60)
    job, described, seconds = _run_job(client, DEMO_JOB, work, timeout)
    ran_on = sorted(_tasks_per_peer(net, described))
    fractions = {}
    for task, output, cid in described["outputs"]:
        if output.startswith("cloud_fraction/") and cid:
            value = tensor_format.decode(client.request("GET", "/v1/cat", params={"cid": cid}).content)
            fractions[output.split("/")[1]] = float(value)
    return {"job_id": job["job_id"], "coordinator": coordinator.index, "state": described["state"],
            "reason": described["reason"], "tasks": job["tasks"], "ran_on_peers": ran_on,
            "seconds": round(seconds, 2), "cloud_fractions": fractions,
            "outputs": len(described["outputs"]),
            "correct": described["state"] == "done" and fractions.keys() == expected.keys()
            and all(abs(fractions[k] - expected[k]) < 1e-9 for k in expected)}


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


PIPELINE_JOB = DEMO_JOB.replace("name: demo-clouds", "name: demo-pipeline").replace(
    "formats: {mask: png, cloud_fraction: tensor}", "formats: {mask: tensor, cloud_fraction: tensor}") + """
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
