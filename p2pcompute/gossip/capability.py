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
from ..node.messages import MAX_TEXT, check_number, check_resources, check_texts
from ..node.wire import message
from ..ops.opset import SUPPORTED_OPSETS

MAX_RECORD_BYTES = 4096
MAX_OPSETS = 16
OPSET_VERSION = "ops/v1"  # the base operator set every peer runs (a record's default)
# every operator set this peer runs, as its own record advertises them (ops/opset.py: opset 2 adds training)
SUPPORTED_OPSET_NAMES = tuple(f"ops/v{v}" for v in SUPPORTED_OPSETS)


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
        # The same checks as a Hello's resources (node/messages.py): one place for what a peer may declare.
        check_number("version", self.version, 0, 2**63 - 1)
        check_resources(self.cpus, self.memory, self.labels)
        check_number("free_slots", self.free_slots, 0, 65536)
        check_number("load", self.load, 0.0, 1e6)
        check_texts("arch", (self.arch,), 1, MAX_TEXT)
        check_texts("opsets", self.opsets, MAX_OPSETS, MAX_TEXT)
        if type(self.wasm) is not bool:
            raise ValueError("wasm is not a bool")
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
