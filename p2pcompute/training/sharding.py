"""Parameter sharding: a parameter vector too large for one peer, cut into parts aggregated by different peers.

Theory of operation
-------------------
The aggregating peer of a sync/local round holds, for its part of the
flattened parameter vector, one update per data shard plus the parameters and
the optimiser's velocity: ``(shards + 2) x part_bytes``. ``aggregate_memory``
is that figure; when it exceeds a peer's memory limit for the whole vector the
coordinator refuses the configuration (``ShardingNeeded``, naming the number
of parts that would fit), and with ``param_shards = P`` the vector is cut
into ``P`` contiguous column ranges (``ranges``, the same cut as
``aggregate.by_parts``), each aggregated on its own.

Who aggregates part ``i`` is the live peer closest, by XOR as the DHT
measures closeness, to the part's key ``SHA-256(run/param-shard/i)``
(``owners``); a peer's key is SHA-256 of its name in the simulation, and its
place in the DHT keyspace on the network (``network_key``: the scheduler's
``replicas.peer_key`` of its peer ID). Every peer that knows the
member list computes the same owner, so a part's owner can be found without
asking, and when it dies the next closest takes the part over. The network
driver uses ``distinct_owners``: the same rule taken part by part, skipping
peers that already hold a part (two parts on one peer would hold twice the
memory the limit allows). Each part's
result is published as its own CID by the driver; the parameters are the
concatenation of the parts. Pure functions; no randomness.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable


class ShardingNeeded(ValueError):
    """The parameters do not fit one peer's memory limit: set ``param_shards``."""


def aggregate_memory(param_bytes: int, shards: int, parts: int = 1) -> int:
    """Bytes one part's aggregating peer holds: a part of each of ``shards`` updates, the parameters and
    the velocity."""
    return math.ceil(param_bytes / max(1, parts)) * (shards + 2)


def parts_needed(param_bytes: int, shards: int, memory_limit: int) -> int:
    """The fewest parts whose aggregation fits ``memory_limit`` bytes (0: no limit)."""
    if memory_limit <= 0 or param_bytes <= 0:
        return 1
    return max(1, math.ceil(param_bytes * (shards + 2) / memory_limit))


def check_fits(param_bytes: int, shards: int, parts: int, memory_limit: int) -> None:
    """``ShardingNeeded`` (a clear message) when one part's aggregation exceeds ``memory_limit``."""
    need = parts_needed(param_bytes, shards, memory_limit)
    if parts < need:
        raise ShardingNeeded(
            f"the parameters ({param_bytes} bytes) need {aggregate_memory(param_bytes, shards, parts)} bytes on the "
            f"peer that aggregates {'them' if parts == 1 else 'one of ' + str(parts) + ' parts'} ({shards} updates, "
            f"the parameters and the velocity), over a peer's memory limit of {memory_limit} bytes: shard the "
            f"parameters (param_shards: {need} or more) so that different peers aggregate different parts")


def ranges(length: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous [lo, hi) column ranges covering ``length`` (numpy.array_split's cut)."""
    if not 1 <= parts <= max(1, length):
        raise ValueError(f"cannot cut {length} coordinates into {parts} parts")
    base, extra = divmod(length, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + base + (i < extra)
        out.append((lo, hi))
        lo = hi
    return out


def part_key(run: str, part: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{run}/param-shard/{part}".encode()).digest(), "big")


def peer_key(peer: str) -> int:
    return int.from_bytes(hashlib.sha256(peer.encode()).digest(), "big")


def owners(run: str, parts: int, peers: Iterable[str], key: Callable[[str], int] = peer_key) -> tuple[str, ...]:
    """For each part, the peer of ``peers`` closest to its key (XOR); () when there is no peer. ``key``
    places a peer in the keyspace: SHA-256 of its name here and in the simulation; on the network, the
    DHT's (``scheduler.replicas.peer_key`` of its peer ID: the driver passes ``network_key``)."""
    live = sorted(set(peers))
    if not live:
        return ()
    keys = {p: key(p) for p in live}
    return tuple(min(live, key=lambda p: (keys[p] ^ part_key(run, i), p)) for i in range(parts))


def distinct_owners(run: str, parts: int, peers: Iterable[str],
                    key: Callable[[str], int] = peer_key) -> tuple[str, ...]:
    """As ``owners``, but no peer holds two parts while there are peers enough: part 0 goes to its closest
    peer, part 1 to its closest of the others, and so on (with fewer peers than parts, the parts past the
    peer count start over on all of them). Aggregating two parts would hold twice a part's memory, which
    is what ``peer_memory`` forbids. Every peer that knows the member list computes the same owners."""
    live = sorted(set(peers))
    if not live:
        return ()
    keys = {p: key(p) for p in live}
    out: list[str] = []
    for i in range(parts):
        free = [p for p in live if p not in out[len(out) - len(out) % len(live):]]
        out.append(min(free, key=lambda p: (keys[p] ^ part_key(run, i), p)))
    return tuple(out)


def network_key(peer: str) -> int:
    """A peer ID's (base58 text) place in the DHT keyspace, as the scheduler's replicas measure it."""
    from ..node.identity import PeerId
    from ..scheduler.replicas import peer_key as dht_key

    return dht_key(PeerId.from_string(peer))
