"""Membership messages and capability records on the wire."""

from __future__ import annotations

import cbor2
import pytest

from p2pcompute.errors import BadSignature, WireError
from p2pcompute.gossip.capability import CapabilityRecord, detect_resources, make_record, open_record
from p2pcompute.gossip.messages import (
    ALIVE,
    MAX_PIGGYBACK,
    SUSPECT,
    Ack,
    Gossip,
    Nack,
    Ping,
    PingReq,
    PushPull,
    PushPullReply,
    Update,
)
from p2pcompute.node import wire
from gossip_sim import identities

IDENTS = identities(3, salt=5)
A, B, C = (i.peer_id for i in IDENTS)


def roundtrip(msg):
    return wire.decode(wire.encode(msg)).message


def test_every_membership_message_roundtrips():
    claim = make_record(IDENTS[0], 3, cpus=4.0, memory=1 << 32, arch="x86_64", labels={"zone": "eu"})
    updates = (Update(A, ALIVE, 3, (), "/ip4/127.0.0.1/tcp/4001"), Update(B, SUSPECT, 1, (A, C)))
    msgs = [
        Ping(1, updates, (claim,)),
        Ack(2**40, updates),
        PingReq(5, C, 0.225, updates),
        Nack(5),
        Gossip(updates, (claim,)),
        PushPull(updates, ((A, 3), (B, 0)), join=True),
        PushPullReply(updates, (claim,), ((C, 1),)),
    ]
    for msg in msgs:
        assert roundtrip(msg) == msg
    codes = {wire.spec_of(m).code for m in msgs}
    assert codes <= set(range(100, 200)) and len(codes) == len(msgs)


def test_malformed_membership_messages_become_wire_errors():
    good = wire.encode(Gossip((Update(A, ALIVE, 0),)))
    env = wire.decode(good)
    assert env.message.updates[0].peer == A
    outer = cbor2.loads(good)
    for body in (
        {"updates": [{"peer": A.raw, "state": 9, "incarnation": 0}]},  # unknown state
        {"updates": [{"peer": A.raw, "state": 0, "incarnation": -1}]},  # negative incarnation
        {"updates": [{"peer": b"xx", "state": 0, "incarnation": 0}]},  # not a peer id
        {"updates": [{"peer": A.raw, "state": 0, "incarnation": 0}] * (MAX_PIGGYBACK + 1)},
    ):
        outer[4] = cbor2.dumps(body)
        with pytest.raises(WireError):
            wire.decode(cbor2.dumps(outer))


def test_capability_record_is_signed_and_checked():
    claim = make_record(IDENTS[1], 7, cpus=2.5, memory=123, arch="arm64", opsets=("ops/v1", "ops/v2"),
                        wasm=False, free_slots=2, load=0.5, labels={"gpu": "none"})
    record = open_record(claim)
    assert record == CapabilityRecord(B, 7, 2.5, 123, "arm64", ("ops/v1", "ops/v2"), False, 2, 0.5, {"gpu": "none"})
    tampered = bytearray(claim)
    tampered[len(tampered) // 2] ^= 0x40
    with pytest.raises(WireError):
        open_record(bytes(tampered))
    # a record about B signed by A is refused
    stolen = wire.sign_claim(IDENTS[0], record)
    with pytest.raises(WireError, match="signed by"):
        open_record(stolen)
    unsigned = wire.encode(Gossip())
    with pytest.raises(WireError):
        open_record(unsigned)
    with pytest.raises(WireError):
        open_record(b"\x00" * 5000)


def test_capability_record_limits():
    with pytest.raises(ValueError):
        make_record(IDENTS[0], 1, cpus=1.0, memory=1, arch="x", labels={str(i): "v" for i in range(40)})
    with pytest.raises(ValueError):
        make_record(IDENTS[0], 1, cpus=1.0, memory=1, arch="x" * 200)
    with pytest.raises(ValueError):
        make_record(IDENTS[0], -1, cpus=1.0, memory=1, arch="x")


def test_detect_resources_describes_this_machine():
    res = detect_resources()
    assert res["cpus"] >= 1 and res["memory"] > 0 and res["arch"]
    assert open_record(make_record(IDENTS[2], 1, **res)).cpus == res["cpus"]


def test_capability_record_must_be_signed_to_encode():
    record = CapabilityRecord(A, 1, 1.0, 1, "x")
    with pytest.raises(ValueError):
        wire.encode(record)
    frame = wire.encode(record, identity=IDENTS[0])
    outer = cbor2.loads(frame)
    outer[5] = outer[6] = None
    with pytest.raises(BadSignature):
        wire.decode(cbor2.dumps(outer))
