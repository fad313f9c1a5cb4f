"""The signed capability record each peer gossips: what it can run, and how busy it is.

A record is a ``CapabilityRecord`` signed by its peer as a claim
(``wire.sign_claim``), so any peer can forward it and any receiver can check
it against the peer ID alone. ``version`` grows with every new record of the
same peer (the newest wins); membership merges records by version, separately
from the member's incarnation, so a load change never disturbs failure
detection. ``open_record`` verifies a claim and its limits; ``make_record``
signs one; ``detect_resources`` reads this machine's cpus, memory and arch.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

from ..errors import WireError
from ..node import wire
from ..node.identity import Identity, PeerId
from ..node.wire import message

MAX_RECORD_BYTES = 4096
MAX_LABELS = 32
MAX_TEXT = 128
MAX_OPSETS = 16
OPSET_VERSION = "ops/v1"


@message(110, signed=True)
@dataclass(frozen=True)
class CapabilityRecord:
    """What ``peer_id`` offers. ``memory`` is in bytes; ``load`` is 0..1 (or more when overloaded)."""

    peer_id: PeerId
    version: int
    cpus: float
    memory: int
    arch: str
    opsets: tuple[str, ...] = (OPSET_VERSION,)
    wasm: bool = True
    free_slots: int = 0
    load: float = 0.0
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.version < 2**63:
            raise ValueError("version out of range")
        if not (0.0 <= self.cpus <= 65536.0) or not 0 <= self.memory < 2**62:
            raise ValueError("cpus or memory out of range")
        if not 0 <= self.free_slots <= 65536 or not 0.0 <= self.load <= 1e6:
            raise ValueError("free_slots or load out of range")
        if len(self.opsets) > MAX_OPSETS or len(self.labels) > MAX_LABELS:
            raise ValueError("too many opsets or labels")
        texts = (self.arch, *self.opsets, *self.labels.keys(), *self.labels.values())
        if any(len(t) > MAX_TEXT for t in texts):
            raise ValueError(f"a text field is longer than {MAX_TEXT} characters")
        # (peer, version) as push-pull lists it: built once per record, not once per exchange
        # (a simulation of N peers shares each record among N tables). Not a field: not on the wire.
        object.__setattr__(self, "pair", (self.peer_id, self.version))


def make_record(identity: Identity, version: int, **fields) -> bytes:
    """Sign a capability record for ``identity``; ``fields`` as in ``CapabilityRecord``."""
    record = CapabilityRecord(peer_id=identity.peer_id, version=version, **fields)
    claim = wire.sign_claim(identity, record)
    if len(claim) > MAX_RECORD_BYTES:
        raise ValueError(f"capability record is {len(claim)} bytes, over {MAX_RECORD_BYTES}")
    return claim


def open_record(claim: bytes) -> CapabilityRecord:
    """Verify a signed record; raise ``WireError`` unless it is its own peer's, valid, small."""
    if len(claim) > MAX_RECORD_BYTES:
        raise WireError(f"capability record of {len(claim)} bytes is over {MAX_RECORD_BYTES}")
    signer, record = wire.open_claim(claim, CapabilityRecord, max_size=MAX_RECORD_BYTES)
    if signer != record.peer_id:
        raise WireError(f"capability record of {record.peer_id.short} signed by {signer.short}")
    return record


def detect_resources() -> dict:
    """This machine's cpus, memory (bytes) and architecture, as ``make_record`` fields."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return {"cpus": float(os.cpu_count() or 1), "memory": int(memory), "arch": platform.machine() or "unknown"}
