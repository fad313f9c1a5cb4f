"""The bitswap protobuf codec: byte-identical to generated protobuf code, round trips, fuzz."""

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.errors import MessageTooLarge, WireError
from p2pcompute.storage import bitswap_pb as pb
from p2pcompute.storage.cid import DAG_PB, RAW, Cid


def cid_of(data: bytes, v0: bool) -> Cid:
    return Cid.of(data, DAG_PB, 0) if v0 else Cid.of(data, RAW, 1)


cids = st.builds(cid_of, st.binary(max_size=8), st.booleans())
entries = st.builds(pb.WantEntry, cids, st.integers(-2**31, 2**31 - 1), st.booleans(),
                    st.sampled_from([pb.WANT_BLOCK, pb.WANT_HAVE]), st.booleans())


@st.composite
def blocks(draw):
    data = draw(st.binary(max_size=300))
    v0 = draw(st.booleans())
    return pb.Block.of(cid_of(data, v0), data)


messages = st.builds(pb.Message, st.lists(entries, max_size=5).map(tuple), st.booleans(),
                     st.lists(blocks(), max_size=3).map(tuple),
                     st.lists(st.builds(pb.Presence, cids, st.booleans()), max_size=4).map(tuple),
                     st.integers(-2**31, 2**31 - 1))


@given(messages)
def test_round_trip(msg):
    assert pb.decode(pb.encode(msg)) == msg


def _generated(msg: pb.Message) -> bytes:
    from libp2p.bitswap.pb import bitswap_pb2 as gen  # generated code, as a reference only

    out = gen.Message()
    if msg.wants or msg.full:
        for e in msg.wants:
            out.wantlist.entries.add(block=e.cid.to_bytes(), priority=e.priority, cancel=e.cancel,
                                     wantType=e.want_type, sendDontHave=e.send_dont_have)
        out.wantlist.full = msg.full
        if not msg.wants and msg.full is False:
            out.wantlist.SetInParent()
    for b in msg.blocks:
        out.payload.add(prefix=b.prefix(), data=b.data)
    for p in msg.presences:
        out.blockPresences.add(cid=p.cid.to_bytes(), type=0 if p.have else 1)
    out.pendingBytes = msg.pending_bytes
    return out.SerializeToString()


@settings(max_examples=100, deadline=None)
@given(messages)
def test_bytes_identical_to_generated_protobuf(msg):
    assert pb.encode(msg) == _generated(msg)


@settings(deadline=None)
@given(messages)
def test_generated_bytes_decode_to_the_same_message(msg):
    assert pb.decode(_generated(msg)) == msg


def test_block_cid_is_computed_by_hashing():
    data = b"hello bitswap"
    v1 = Cid.of(data, RAW, 1)
    block = pb.decode(pb.encode(pb.Message(blocks=(pb.Block.of(v1, data),)))).blocks[0]
    assert block.cid() == v1
    assert block.prefix() == bytes([1, 0x55, 0x12, 0x20])
    tampered = pb.Block(block.version, block.codec, block.mh_code, data + b"!")
    assert tampered.cid() != v1  # a corrupted block arrives under another CID
    v0 = Cid.of(data, DAG_PB, 0)
    assert pb.Block.of(v0, data).prefix() == bytes([0, 0x70, 0x12, 0x20])
    assert pb.Block.of(v0, data).cid() == v0


def test_bitswap_1_0_blocks_field_means_cidv0():
    data = b"old style"
    raw = b"\x12" + bytes([len(data)]) + data  # field 2: repeated bytes blocks
    block = pb.decode(raw).blocks[0]
    assert block.cid() == Cid(0, DAG_PB, b"\x12\x20" + hashlib.sha256(data).digest())


def test_unknown_fields_are_skipped():
    msg = pb.Message(presences=(pb.Presence(cid_of(b"x", True), False),))
    extra = b"\x78\x05" + b"\x82\x01\x03abc" + b"\x8d\x01\x00\x00\x00\x00"  # fields 15, 16, 17
    assert pb.decode(pb.encode(msg) + extra) == msg


@pytest.mark.parametrize("raw, reason", [
    (b"\x0a\x05\x0a\x03", "truncated"),
    (b"\x0b", "wire type"),  # group
    (b"\x28", "truncated varint"),
    (b"\x28" + b"\xff" * 10 + b"\x01", "longer than 10"),
    (b"\x0a\x04\x0a\x02\x10\x01", "without a CID"),
    (b"\x0a\x06\x0a\x04\x0a\x02\x12\x00", "CID"),
    (b"\x22\x00", "without a CID"),
    (b"\x1a\x02\x12\x00", "without a prefix"),
    (b"\x1a\x08\x0a\x04\x01\x55\x11\x20\x12\x00", "unsupported hash"),
    (b"\x1a\x08\x0a\x04\x00\x55\x12\x20\x12\x00", "CID version"),
    (b"\x1a\x09\x0a\x05\x01\x55\x12\x20\x00\x12\x00", "trailing"),
    (b"\x00\x00", "field number 0"),
    (b"\x0f", "wire type"),
])
def test_malformed_messages_raise_wire_errors(raw, reason):
    with pytest.raises(WireError, match=reason):
        pb.decode(raw)


def test_unknown_enum_values_are_refused():
    cid = cid_of(b"e", True).to_bytes()
    entry = b"\x0a" + bytes([len(cid)]) + cid + b"\x20\x02"
    with pytest.raises(WireError, match="want type"):
        pb.decode(b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry)


def test_size_limits():
    with pytest.raises(MessageTooLarge):
        pb.decode(b"\x00" * (pb.MAX_MESSAGE + 1))
    big = b"\x00" * (pb.MAX_BLOCK + 1)
    with pytest.raises(WireError, match="over"):
        pb.decode(pb.encode(pb.Message(blocks=(pb.Block(1, RAW, 0x12, big),))))
    many = pb.Message(presences=tuple(pb.Presence(cid_of(b"%d" % i, False), True)
                                      for i in range(pb.MAX_ENTRIES + 1)))
    with pytest.raises(WireError, match="more than"):
        pb.decode(pb.encode(many))
    with pytest.raises(MessageTooLarge):
        pb.encode(pb.Message(blocks=tuple(pb.Block(1, RAW, 0x12, b"\x00" * (1 << 20)) for _ in range(5))))


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_fuzz_only_wire_errors(raw):
    try:
        pb.decode(raw)
    except WireError:
        pass


@settings(max_examples=150)
@given(messages, st.data())
def test_fuzz_mutated_messages_only_wire_errors(msg, data):
    raw = bytearray(pb.encode(msg))
    if raw:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    try:
        pb.decode(bytes(raw))
    except WireError:
        pass
