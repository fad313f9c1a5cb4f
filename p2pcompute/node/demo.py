"""What ``p2pcompute demo`` does on a running devnet, step by step, through the control APIs.

Each step uses real daemons and returns what it measured; nothing is made up:
    1. membership: every peer's view of the others (state, capabilities), pings from peer 0;
    2. data: a random file added on one peer is fetched by another (DHT providers, bitswap)
       and its bytes are checked against the original's SHA-256;
    3. compute: an operator graph runs on a peer's sandboxed executor, its large input
       travelling as a CID, and the result is compared with the same graph run here.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

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
