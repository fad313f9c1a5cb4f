"""Which peers hold a job's record: the k closest to the job by XOR, as the DHT measures closeness.

A job's key is SHA-256 of its id, a peer's is SHA-256 of its peer id bytes
(the DHT's keyspace); distance is their XOR as an integer. The coordinator
sends the record to the ``k`` closest live members other than itself; when
the coordinator dies, the closest live replica of the set it named takes
over. A member that did not answer the record (no acknowledgement within a
few seconds, or the request failed) is *passed over* for a while: the next
closest takes its place at once (``pick``), without waiting for membership
to declare it dead, so that a job keeps ``k`` live copies while peers die
faster than failure detection notices. Pure functions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from ..node.identity import PeerId

K = 3


def job_key(job_id: str) -> int:
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest(), "big")


def peer_key(peer: PeerId) -> int:
    return int.from_bytes(hashlib.sha256(peer.raw).digest(), "big")


def closest(job_id: str, peers: Iterable[PeerId], k: int = K) -> list[PeerId]:
    """The ``k`` of ``peers`` closest to ``job_id``, closest first."""
    key = job_key(job_id)
    return sorted(set(peers), key=lambda p: (peer_key(p) ^ key, p.raw))[:k]


def pick(job_id: str, live: Iterable[PeerId], k: int = K, passed: Iterable[PeerId] = ()) -> list[PeerId]:
    """The replicas of a job: the ``k`` closest of ``live`` that are not ``passed`` over, closest first."""
    skip = set(passed)
    return closest(job_id, (p for p in live if p not in skip), k)


def successor(job_id: str, replicas: Iterable[PeerId], alive: set[PeerId]) -> PeerId | None:
    """The replica that takes a job over: the closest of its live replicas (None: none is alive)."""
    live = [p for p in replicas if p in alive]
    return closest(job_id, live, 1)[0] if live else None
