"""Sybil and collusion limits for the replicas of one task, as pure predicates.

Replicas of one task (executions that will be compared) never go to two
peers that share an IPv4 /24 (IPv6: a /48), nor to two peers that joined
within ``join_window_s`` of each other: a cheater who starts many peers on
one machine, one subnet or in one burst gets at most one vote per task.
Loopback addresses say nothing about where a peer is and are ignored (a
devnet on one host is not refused); a peer with no other address is judged
by its join time only. The coordinator chooses replicas at random among the
peers placement offers (``pick_replicas``), never letting peers choose.

A peer ID others accept may also have to carry a small proof of work
(``pow_ok``: SHA-256 of a domain tag, the peer ID and a nonce has ``bits``
leading zero bits; ``mint`` finds the nonce, about 2**bits hashes), so that
minting thousands of IDs costs thousands of times that. Where the nonce
travels (the peer record) is for the integration.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence


@dataclass(frozen=True)
class PeerFacts:
    peer: Hashable
    addrs: tuple[str, ...] = ()      # IP addresses (or multiaddrs /ip4/A/..., /ip6/A/...)
    joined: float | None = None      # when this coordinator first saw it (membership), seconds


@dataclass(frozen=True)
class SybilRules:
    v4_prefix: int = 24              # 0: no subnet rule
    v6_prefix: int = 48
    join_window_s: float = 60.0      # 0: no join-time rule


def subnets(addrs: Iterable[str], rules: SybilRules = SybilRules()) -> set[str]:
    """The subnets of a peer's non-loopback addresses ("10.1.2.0/24"); unparsable ones are skipped."""
    out = set()
    for a in addrs:
        text = str(a)
        if text.startswith("/ip4/") or text.startswith("/ip6/"):
            text = text.split("/")[2]
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_loopback or ip.is_unspecified:
            continue
        prefix = rules.v4_prefix if ip.version == 4 else rules.v6_prefix
        if prefix:
            out.add(str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False)))
    return out


def conflict(a: PeerFacts, b: PeerFacts, rules: SybilRules = SybilRules()) -> str | None:
    """Why ``a`` and ``b`` may not both run replicas of one task (None: they may)."""
    shared = subnets(a.addrs, rules) & subnets(b.addrs, rules)
    if shared:
        return f"share the subnet {sorted(shared)[0]}"
    if rules.join_window_s and a.joined is not None and b.joined is not None and \
            abs(a.joined - b.joined) < rules.join_window_s:
        return f"joined {abs(a.joined - b.joined):.0f}s apart (under {rules.join_window_s:g}s)"
    return None


def allowed(candidate: PeerFacts, chosen: Sequence[PeerFacts], rules: SybilRules = SybilRules()) -> str | None:
    """Why ``candidate`` may not join the peers already running this task's replicas (None: it may)."""
    for other in chosen:
        if other.peer == candidate.peer:
            return "already runs this task"
        why = conflict(candidate, other, rules)
        if why:
            return f"{why} with a peer running this task"
    return None


def pick_replicas(candidates: Sequence[PeerFacts], k: int, chosen: Sequence[PeerFacts], rng: random.Random,
                  rules: SybilRules = SybilRules()) -> list[PeerFacts]:
    """Up to ``k`` candidates, in a random order the coordinator draws, none conflicting with ``chosen``
    or with each other."""
    order = list(candidates)
    rng.shuffle(order)
    picked: list[PeerFacts] = []
    for c in order:
        if len(picked) >= k:
            break
        if allowed(c, [*chosen, *picked], rules) is None:
            picked.append(c)
    return picked


POW_DOMAIN = b"p2pcompute/peer-pow/v1\x00"
MAX_POW_BITS = 32


def pow_ok(peer: bytes, nonce: int, bits: int) -> bool:
    """Does ``nonce`` prove ``bits`` bits of work for ``peer`` (its ID's bytes)? Never raises."""
    if type(nonce) is not int or not 0 <= nonce < 1 << 64 or not 0 <= bits <= MAX_POW_BITS:
        return False
    digest = hashlib.sha256(POW_DOMAIN + bytes(peer) + nonce.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits) == 0 if bits else True


def mint(peer: bytes, bits: int, start: int = 0, tries: int = 1 << 40) -> int | None:
    """The first nonce from ``start`` proving ``bits`` bits for ``peer`` (about 2**bits hashes), or None."""
    if not 0 <= bits <= MAX_POW_BITS:
        raise ValueError(f"bits is between 0 and {MAX_POW_BITS}")
    for nonce in range(start, min(start + tries, 1 << 64)):
        if pow_ok(peer, nonce, bits):
            return nonce
    return None
