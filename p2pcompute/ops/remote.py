"""Running a DSL graph on a daemon: the client half of ``/v1/compute``.

Inputs of at most ``INLINE_LIMIT`` bytes travel inline; larger ones become
content-addressed data first: their tensor bytes are imported as a UnixFS
file into the daemon's blockstore (the client shares the daemon's data dir,
as a local ``p2pcompute add`` does) and the request names only the CID.
Large outputs come back the same way, as CIDs read from that blockstore.
"""

from __future__ import annotations

from typing import Any

import cbor2
import numpy as np

from ..errors import P2PComputeError, UserError
from . import tensor_format
from .graph import INLINE_LIMIT, Graph


def input_ref(array: np.ndarray, blockstore: Any) -> dict[str, Any]:
    """How an input travels: inline tensor bytes, or the CID of a UnixFS file of them."""
    data = tensor_format.encode(np.asarray(array))
    if len(data) <= INLINE_LIMIT:
        return {"data": data}
    from ..storage.importer import import_bytes

    result = import_bytes(data, blockstore.put)  # the daemon pins it: one writer of the pin set
    return {"cid": str(result.cid)}


def output_value(ref: dict[str, Any], blockstore: Any) -> np.ndarray:
    if "data" in ref:
        return tensor_format.decode(ref["data"])
    from ..storage.cid import Cid
    from ..storage.exporter import read_file

    return tensor_format.decode(read_file(blockstore.get, Cid.parse(ref["cid"])))


def compute_on(client: Any, graph: Graph, feeds: dict[str, Any], limits: dict | None = None) -> list[np.ndarray]:
    """Run ``graph`` on the daemon behind ``client`` (a ``ControlClient``); outputs in graph order."""
    from ..storage.blockstore import Blockstore

    blockstore = Blockstore.for_data_dir(client.data_dir)
    body = cbor2.dumps({"graph": graph.to_cbor(),
                        "inputs": {name: input_ref(value, blockstore) for name, value in feeds.items()},
                        "limits": limits or {}})
    resp = client.request("POST", "/v1/compute", content=body, headers={"content-type": "application/cbor"})
    try:
        reply = cbor2.loads(resp.content)
    except Exception:
        raise P2PComputeError("the daemon's compute reply is not CBOR") from None
    if reply.get("status") != "ok":
        raise UserError(f"the daemon could not compute the graph: {reply.get('status')}: {reply.get('message')}")
    return [output_value(reply["outputs"][name], blockstore) for name in graph.outputs]
