"""What a hostile peer sends: messages no honest encoder builds (issue 9's gossip and record attacks).

Shared by tests/test_membership_real.py and bench/bench_gossip_hostile.py, so
the attacks the tests keep are the ones the bench measures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from p2pcompute.gossip.messages import ALIVE, DEAD, MAX_INCARNATION, SUSPECT, Gossip, Update
from p2pcompute.node import wire
from p2pcompute.node.identity import Identity, PeerId
from p2pcompute.node.messages import GetPeers, Hello, HelloReply, PeerRecord, Peers, Resources


def poisoned(obj, **fields):
    """``obj`` with ``fields`` set past its checks, as a hostile encoder would."""
    for name, value in fields.items():
        object.__setattr__(obj, name, value)
    return obj


def forged(peer: PeerId, state: int, incarnation: int) -> Update:
    """An Update no honest peer can build (an out-of-range incarnation)."""
    return poisoned(Update(peer, state, 0), incarnation=incarnation)


def forged_incarnations(victim: PeerId) -> list[Update]:
    """Claims about ``victim`` meant to push its incarnation to the end of its range (or past it)."""
    return [forged(victim, ALIVE, 2**63 - 1), forged(victim, DEAD, 2**63 - 1), Update(victim, ALIVE, MAX_INCARNATION),
            Update(victim, SUSPECT, MAX_INCARNATION - 1), Update(victim, DEAD, 2**40)]


def fake_members(n: int) -> list[PeerId]:
    """``n`` made-up peer IDs (nobody holds their keys)."""
    return [PeerId(b"\x12\x20" + os.urandom(32)) for _ in range(n)]


def fake_member_gossip(fakes: list[PeerId], batch: int = 256) -> Iterator[Gossip]:
    """Gossip saying each of ``fakes`` is alive at some loopback address, ``batch`` updates a message."""
    for i in range(0, len(fakes), batch):
        yield Gossip(updates=tuple(Update(p, ALIVE, 0, (), f"/ip4/127.0.0.1/tcp/{1 + (i + k) % 60000}")
                                   for k, p in enumerate(fakes[i:i + batch])))


def poisoned_claim(ident: Identity, **resources) -> bytes:
    """A signed peer record of ``ident`` whose resources carry ``resources`` unchecked (memory=10**5000...)."""
    res = poisoned(Resources(1.0, 1 << 30), **resources)
    return wire.sign_claim(ident, PeerRecord(ident.peer_id, 1, ("/ip4/127.0.0.1/tcp/9",), res))


def poisoned_capability(ident: Identity, **fields) -> bytes:
    """A signed capability record of ``ident`` with ``fields`` unchecked (cpus=nan...)."""
    from p2pcompute.gossip.capability import CapabilityRecord

    return wire.sign_claim(ident, poisoned(CapabilityRecord(ident.peer_id, 1, 1.0, 1 << 30, "x86_64"), **fields))


def poisoned_others(n: int = 3) -> tuple[list[Identity], list[bytes]]:
    """``n`` other identities and a poisoned record for each (huge memory, huge cpus, NaN and 1000 labels)."""
    others = [Identity.generate() for _ in range(n)]
    kinds = [dict(memory=10**5000), dict(cpus=10**400),
             dict(cpus=float("nan"), labels={str(i): "x" for i in range(1000)})]
    return others, [poisoned_claim(o, **kinds[i % len(kinds)]) for i, o in enumerate(others)]


def serve_poisoned_exchange(transport, bad: list[bytes]) -> list[PeerId]:
    """Make ``transport`` answer Hello with its own good record and GetPeers with ``bad`` (peer exchange
    forwards the poison). Returns the list of peers it served GetPeers to, filled as they ask."""
    own = wire.sign_claim(transport.identity, PeerRecord(transport.local_id, 1, (), Resources(1.0, 1 << 30)))
    served: list[PeerId] = []

    async def hello(peer, msg):
        return HelloReply(own)

    async def get_peers(peer, msg):
        served.append(peer)
        return Peers(tuple(bad))

    transport.on_request(Hello, hello)
    transport.on_request(GetPeers, get_peers)
    return served
