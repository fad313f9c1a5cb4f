"""Signed value records: signatures, ownership, newest-wins, the bounded store."""

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.dht.records import (
    PutResult,
    RecordStore,
    SignedValue,
    author_of,
    make_record,
    newer,
    record_key,
    validate,
)
from p2pcompute.errors import BadSignature, WireError
from p2pcompute.node.identity import Identity

ALICE = Identity.from_seed(b"A" * 32)
MALLORY = Identity.from_seed(b"M" * 32)


def test_make_and_validate_round_trip():
    rec = make_record(ALICE, b"capabilities", b"\x01\x02", 7)
    assert rec.key == record_key(ALICE.peer_id, b"capabilities")
    assert author_of(rec.key) == ALICE.peer_id
    got = validate(rec.key, rec.encode())
    assert got == rec and got.author == ALICE.peer_id and got.seq == 7


def test_tampering_is_detected():
    rec = make_record(ALICE, b"n", b"value", 3)
    for value, seq in ((b"other", 3), (b"value", 4)):
        forged = cbor2.dumps([1, seq, value, rec.signature])
        with pytest.raises(BadSignature):
            validate(rec.key, forged)
    bad_sig = cbor2.dumps([1, 3, b"value", bytes(64)])
    with pytest.raises(BadSignature):
        validate(rec.key, bad_sig)
    # the same signed bytes moved under another name do not verify
    with pytest.raises(BadSignature):
        validate(record_key(ALICE.peer_id, b"m"), rec.encode())


def test_only_the_author_can_write_its_keys():
    forged = make_record(MALLORY, b"n", b"evil", 99)
    with pytest.raises(BadSignature):
        validate(record_key(ALICE.peer_id, b"n"), forged.encode())


@pytest.mark.parametrize(
    "key",
    [b"", b"/ipns/x", b"/p2pc/", b"/p2pc/" + b"x" * 38 + b"/n", b"/p2pc/" + ALICE.peer_id.raw, b"/p2pc/" + ALICE.peer_id.raw + b"/"],
)
def test_malformed_keys(key):
    with pytest.raises(WireError):
        author_of(key)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_garbage_values_raise_only_wire_errors(data):
    key = record_key(ALICE.peer_id, b"n")
    with pytest.raises(WireError):
        validate(key, data)


@settings(max_examples=200)
@given(st.integers(0, 200), st.integers(0, 255))
def test_mutated_records_raise_only_wire_errors(pos, byte):
    rec = make_record(ALICE, b"n", b"payload", 5)
    data = bytearray(rec.encode())
    pos %= len(data)
    if data[pos] == byte:
        return
    data[pos] = byte
    try:
        got = validate(rec.key, bytes(data))
    except WireError:
        return
    # a mutation that still validates must decode to the very same record
    assert got == rec


def test_newer_by_seq_with_deterministic_ties():
    a1 = make_record(ALICE, b"n", b"a", 1)
    a2 = make_record(ALICE, b"n", b"b", 2)
    assert newer(a2, a1) and not newer(a1, a2)
    t1 = make_record(ALICE, b"n", b"x", 5)
    t2 = make_record(ALICE, b"n", b"y", 5)
    assert newer(t1, t2) != newer(t2, t1)


def test_store_keeps_the_newest():
    store = RecordStore()
    v1 = make_record(ALICE, b"n", b"one", 1)
    v2 = make_record(ALICE, b"n", b"two", 2)
    assert store.put(v1.key, v1.encode(), 0.0) is PutResult.STORED
    assert store.put(v1.key, v1.encode(), 1.0) is PutResult.UNCHANGED
    assert store.put(v2.key, v2.encode(), 2.0) is PutResult.STORED
    assert store.put(v1.key, v1.encode(), 3.0) is PutResult.OLDER
    assert store.get(v1.key, 4.0) == v2
    with pytest.raises(BadSignature):
        store.put(v1.key, make_record(MALLORY, b"n", b"x", 9).encode(), 5.0)
    assert store.get(v1.key, 5.0) == v2


def test_store_expiry_and_bound():
    store = RecordStore(max_records=3, max_age=100.0)
    recs = [make_record(ALICE, f"k{i}".encode(), b"v", 1) for i in range(5)]
    for t, rec in enumerate(recs):
        store.put(rec.key, rec.encode(), float(t))
    assert len(store) == 3
    assert store.get(recs[0].key, 5.0) is None and store.get(recs[4].key, 5.0) == recs[4]
    assert store.get(recs[2].key, 102.0) is None  # received at 2, aged out
    assert store.expire(103.5) == 2
    assert len(store) == 1


def test_signed_value_is_plain_data():
    rec = make_record(ALICE, b"n", b"v", 1)
    assert isinstance(rec, SignedValue)
    with pytest.raises(ValueError):
        make_record(ALICE, b"", b"v", 1)
    with pytest.raises(ValueError):
        make_record(ALICE, b"n", b"v", -1)
