"""The kad-dht protobuf codec: round trips, byte-compatibility with generated code, fuzzing."""

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from libp2p.kad_dht.pb import kademlia_pb2 as gen

from p2pcompute.dht import pb
from p2pcompute.errors import ConfigError, MessageTooLarge, UnknownMessageType, WireError
from p2pcompute.node.framing import encode_varint
from p2pcompute.node.identity import Identity

INT32 = st.integers(-(2**31), 2**31 - 1)
small_bytes = st.binary(max_size=40)


def kad_peers(connection=INT32):
    return st.builds(
        pb.KadPeer,
        id=small_bytes,
        addrs=st.lists(small_bytes, max_size=4).map(tuple),
        connection=connection,
        signed_record=st.none() | small_bytes,
    )


records = st.builds(
    pb.KadRecord,
    key=small_bytes,
    value=small_bytes,
    time_received=st.text(max_size=20),
    author=st.none() | small_bytes,
    signature=st.none() | small_bytes,
)


def kad_messages(connection=INT32, cluster=INT32):
    return st.builds(
        pb.KadMessage,
        type=st.sampled_from(pb.MessageType),
        key=small_bytes,
        record=st.none() | records,
        closer_peers=st.lists(kad_peers(connection), max_size=4).map(tuple),
        provider_peers=st.lists(kad_peers(connection), max_size=4).map(tuple),
        cluster_level=cluster,
        sender_record=st.none() | small_bytes,
    )


@settings(max_examples=150)
@given(kad_messages())
def test_round_trip(msg):
    data = pb.encode(msg)
    assert pb.decode(data) == msg
    assert pb.encode(pb.decode(data)) == data


def _gen_peer(p):
    peer = gen.Message.Peer(id=p.id, addrs=list(p.addrs), connection=p.connection)
    if p.signed_record is not None:
        peer.signedRecord = p.signed_record
    return peer


def to_generated(msg: pb.KadMessage) -> gen.Message:
    out = gen.Message(type=int(msg.type), key=msg.key, clusterLevelRaw=msg.cluster_level)
    if msg.record is not None:
        r = msg.record
        out.record.CopyFrom(gen.Record(key=r.key, value=r.value, timeReceived=r.time_received))
        if r.author is not None:
            out.record.author = r.author
        if r.signature is not None:
            out.record.signature = r.signature
    out.closerPeers.extend(_gen_peer(p) for p in msg.closer_peers)
    out.providerPeers.extend(_gen_peer(p) for p in msg.provider_peers)
    if msg.sender_record is not None:
        out.senderRecord = msg.sender_record
    return out


@settings(max_examples=150)
@given(kad_messages(connection=st.integers(0, 3)))
def test_byte_identical_to_generated_protobuf(msg):
    theirs = to_generated(msg)
    assert pb.encode(msg) == theirs.SerializeToString()
    parsed = gen.Message()
    parsed.ParseFromString(pb.encode(msg))
    assert parsed == theirs
    assert pb.decode(theirs.SerializeToString()) == msg


def test_real_find_node_exchange_shape():
    """What py-libp2p / kubo send for FIND_NODE and what a reply with a peer looks like."""
    peer = Identity.from_seed(b"p" * 32).peer_id
    addr = pb.addr_to_bytes("/ip4/127.0.0.1/tcp/4001")
    req = gen.Message(type=gen.Message.FIND_NODE, key=peer.raw)
    assert pb.decode(req.SerializeToString()) == pb.request(pb.MessageType.FIND_NODE, peer.raw)
    reply = pb.KadMessage(pb.MessageType.FIND_NODE, peer.raw, closer_peers=(pb.kad_peer(peer, [addr], 1),))
    parsed = gen.Message()
    parsed.ParseFromString(pb.encode(reply))
    assert parsed.closerPeers[0].id == peer.raw
    assert parsed.closerPeers[0].connection == gen.Message.CONNECTED
    decoded = pb.decode(parsed.SerializeToString())
    assert pb.peer_id_of(decoded.closer_peers[0]) == peer
    assert pb.peer_addrs(decoded.closer_peers[0]) == ["/ip4/127.0.0.1/tcp/4001"]


def test_framing_prefixes_the_length():
    msg = pb.request(pb.MessageType.PING)
    assert pb.frame(msg) == encode_varint(len(pb.encode(msg))) + pb.encode(msg)
    big = pb.KadMessage(pb.MessageType.GET_VALUE, b"k" * 300)
    assert pb.frame(big)[:2] == encode_varint(len(pb.encode(big)))


def test_unknown_fields_are_skipped():
    base = pb.encode(pb.request(pb.MessageType.GET_PROVIDERS, b"key"))
    extra = (
        encode_varint(20 << 3 | 0) + encode_varint(7)  # varint
        + encode_varint(21 << 3 | 1) + b"\x00" * 8  # fixed64
        + encode_varint(22 << 3 | 2) + b"\x03abc"  # bytes
        + encode_varint(23 << 3 | 5) + b"\x00" * 4  # fixed32
    )
    assert pb.decode(extra + base + extra) == pb.request(pb.MessageType.GET_PROVIDERS, b"key")


def test_last_scalar_wins_and_records_merge():
    a = pb.encode(pb.KadMessage(pb.MessageType.GET_VALUE, b"one", pb.KadRecord(key=b"k")))
    b = pb.encode(pb.KadMessage(pb.MessageType.PUT_VALUE, b"two", pb.KadRecord(value=b"v")))
    merged = pb.decode(a + b)
    assert merged.key == b"two" and merged.type is pb.MessageType.GET_VALUE  # PUT_VALUE (0) is not written
    assert merged.record == pb.KadRecord(key=b"k", value=b"v")
    theirs = gen.Message()
    theirs.ParseFromString(a + b)
    assert theirs.record.key == b"k" and theirs.record.value == b"v"


@pytest.mark.parametrize(
    "data, error",
    [
        (b"\x08", WireError),  # truncated varint
        (b"\x08\x09", UnknownMessageType),  # type 9
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", UnknownMessageType),  # type -1
        (b"\x08" + b"\xff" * 10 + b"\x01", WireError),  # varint too long
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", WireError),  # overflows 64 bits
        (b"\x12\x05abc", WireError),  # length past the end
        (b"\x10\x01", WireError),  # key (bytes) sent as a varint
        (b"\x0a\x01x", WireError),  # type (varint) sent as bytes
        (b"\x00\x01", WireError),  # field number 0
        (b"\x0b\x0c", WireError),  # a group
        (b"\xa1\x01\x00", WireError),  # fixed64 past the end
        (b"\x1a\x03\x2a\x01\xff", WireError),  # timeReceived not UTF-8
        (b"\x42\x02\x08\x01", WireError),  # peer id sent as a varint
    ],
)
def test_malformed_inputs(data, error):
    with pytest.raises(error):
        pb.decode(data)


def test_limits():
    many = pb.KadMessage(pb.MessageType.FIND_NODE, closer_peers=tuple(pb.KadPeer(b"x") for _ in range(11)))
    with pytest.raises(WireError, match="more than 10 peers"):
        pb.decode(pb.encode(many), max_peers=10)
    addrs = pb.KadMessage(pb.MessageType.FIND_NODE, provider_peers=(pb.KadPeer(b"x", (b"a",) * 5),))
    with pytest.raises(WireError, match="more than 4 addresses"):
        pb.decode(pb.encode(addrs), max_addrs=4)
    with pytest.raises(MessageTooLarge):
        pb.decode(b"\x12\x05hello", max_size=4)
    with pytest.raises(MessageTooLarge):
        pb.encode(pb.KadMessage(pb.MessageType.PUT_VALUE, b"x" * (pb.MAX_MESSAGE + 1)))


def _check_decode(data: bytes) -> None:
    """Either a ``WireError``, or a message that re-encodes stably and that generated code agrees with."""
    try:
        msg = pb.decode(data)
    except WireError:
        return
    again = pb.encode(msg)
    assert pb.decode(again) == msg
    theirs = gen.Message()
    theirs.ParseFromString(data)
    assert theirs.key == msg.key and int(theirs.type) == int(msg.type)
    assert len(theirs.closerPeers) == len(msg.closer_peers)
    assert [p.id for p in theirs.closerPeers] == [p.id for p in msg.closer_peers]
    assert [list(p.addrs) for p in theirs.providerPeers] == [list(p.addrs) for p in msg.provider_peers]
    assert theirs.HasField("record") == (msg.record is not None)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
@example(b"")
def test_fuzz_random_bytes(data):
    _check_decode(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(kad_messages(connection=st.integers(0, 3)), st.data())
def test_fuzz_mutated_messages(msg, data):
    raw = bytearray(pb.encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if action == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=3))
    _check_decode(bytes(raw))


# --- multiaddrs ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "/ip4/127.0.0.1/tcp/4001",
        "/ip6/::1/udp/4001/quic-v1",
        "/dns4/example.com/tcp/443/wss",
        "/ip4/10.0.0.1/tcp/1/p2p/12D3KooWGzh9qQtVMCr5pc8QWmcEAYP6X2zA1ZKp6yGT4kCK6Ub3",
    ],
)
def test_multiaddr_round_trip(text):
    assert pb.addr_from_bytes(pb.addr_to_bytes(text)) == text


@pytest.mark.parametrize("raw", [b"", b"\x00", b"\x04\x7f", b"\x04\x7f\x00\x00\x01\x06", b"\xff\xff\xff"])
def test_malformed_multiaddrs(raw):
    # b"\x04\x7f" is a truncated /ip4: the multiaddr package pads it, we refuse it
    with pytest.raises(WireError):
        pb.addr_from_bytes(raw)


def test_peer_addrs_skips_what_it_cannot_read():
    good = pb.addr_to_bytes("/ip4/1.2.3.4/tcp/5")
    assert pb.peer_addrs(pb.KadPeer(b"id", (b"\x04\x7f", good, b"\xff"))) == ["/ip4/1.2.3.4/tcp/5"]
    assert pb.peer_id_of(pb.KadPeer(b"not a peer id")) is None
    with pytest.raises(ConfigError):
        pb.addr_to_bytes("not a multiaddr")


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_multiaddr_fuzz(raw):
    try:
        text = pb.addr_from_bytes(raw)
    except WireError:
        return
    assert pb.addr_to_bytes(text) == raw
