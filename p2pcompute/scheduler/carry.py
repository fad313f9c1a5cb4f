"""Small inputs and outputs carried inline in a grant or a result, instead of a bitswap round trip each.

Theory of operation. A DAG (a task's input or output, named by its CID) whose
blocks together fit the budget (``messages.MAX_CARRIED``, 256 KiB) travels as
its blocks, (CID, bytes) pairs, inside the ``TaskGrant`` (inputs the
coordinator holds) or the ``TaskDone`` (outputs the executor made). CIDs stay
the identity: the receiver stores a block only if its bytes hash to its CID
(``Blockstore.put`` verifies) and a DAG it asked for reaches it (a peer cannot
park other blocks here), and uses a DAG only once every block of it is
here; anything missing or wrong is simply fetched by bitswap as before. These
are plain blocking functions over a ``Blockstore``: the service runs them in a
worker thread, inside one blockstore session (no GC between storing and pinning).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import P2PComputeError
from ..storage.car import iter_dag
from ..storage.cid import Cid


def gather(blockstore: Any, roots: Iterable[str], budget: int) -> tuple[tuple[str, bytes], ...]:
    """The blocks of each DAG in ``roots`` held here whole, while they fit ``budget`` bytes in all
    (a DAG that does not fit, or is not all here, is left out: the other side fetches it)."""
    out: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for root in roots:
        blocks, size = [], 0
        try:
            for cid, data in iter_dag(blockstore.get, Cid.parse(root)):
                size += len(data)
                if size > budget:
                    break
                blocks.append((str(cid), data))
            else:
                budget -= size
                out.extend(b for b in blocks if b[0] not in seen)
                seen.update(c for c, _ in blocks)
        except (P2PComputeError, ValueError):
            continue
    return tuple(out)


def keep(blockstore: Any, blocks: Iterable[tuple[str, bytes]], roots: Iterable[str], pin: bool) -> list[str]:
    """Store the carried ``blocks`` of the DAGs under ``roots`` that hash to their CID (a block no root
    reaches is not stored); of ``roots``, those now here whole (pinned if ``pin``). The others must be fetched."""
    given = dict(blocks)

    def get(cid: Cid) -> bytes:
        data = given.get(str(cid))
        if data is None:
            return blockstore.get(cid)
        blockstore.put(cid, data)         # checked against the CID: a block that is not what it says raises
        return data

    whole: list[str] = []
    with blockstore.session():
        for root in roots:
            try:
                cid = Cid.parse(root)
                if root in given:
                    for _ in iter_dag(get, cid):
                        pass
                if pin:
                    blockstore.pin(cid)
                else:
                    for _ in blockstore.walk(cid):
                        pass
            except (P2PComputeError, ValueError):
                continue
            whole.append(root)
    return whole
