import cbor2
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from p2pcompute.errors import BadSignature, MessageTooLarge, UnknownMessageType, UnknownVersion, WireError
from p2pcompute.node import wire
from p2pcompute.node.identity import Identity
from p2pcompute.node.messages import Hello, PeerRecord, Peers, Ping, Resources
from p2pcompute.node.wire import Kind

ALICE = Identity.from_seed(b"a" * 32)
MALLORY = Identity.from_seed(b"m" * 32)


def record(ident=ALICE, seq=1):
    return PeerRecord(ident.peer_id, seq, ("/ip4/127.0.0.1/tcp/4001",), Resources(4.0, 8 << 30, {"zone": "eu"}))


@given(st.integers(0, 2**63), st.binary(max_size=512), st.integers(0, 2**64 - 1), st.sampled_from(list(Kind)))
def test_round_trip(nonce, payload, request_id, kind):
    frame = wire.encode(Ping(nonce, payload), kind=kind, request_id=request_id)
    env = wire.decode(frame)
    assert env.message == Ping(nonce, payload)
    assert (env.kind, env.request_id, env.signer) == (kind, request_id, None)


@given(st.text(max_size=40), st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
       st.floats(0.1, 512), st.integers(0, 2**50))
def test_signed_record_round_trip(agent, labels, cpus, memory):
    rec = PeerRecord(ALICE.peer_id, 7, ("/ip4/1.2.3.4/tcp/1",), Resources(cpus, memory, labels), agent)
    signer, back = wire.open_claim(wire.sign_claim(ALICE, rec), PeerRecord)
    assert signer == ALICE.peer_id and back == rec


def test_signed_type_must_be_signed():
    with pytest.raises(ValueError):
        wire.encode(record())
    body = cbor2.dumps(wire._to_cbor(record()), canonical=True)
    forged = cbor2.dumps([1, 0, 0, wire.spec_of(PeerRecord).code, body, None, None])
    with pytest.raises(BadSignature):
        wire.decode(forged)


def test_tampered_body_or_signature_is_rejected():
    frame = cbor2.loads(wire.sign_claim(ALICE, record()))
    tampered_body = list(frame)
    tampered_body[4] = tampered_body[4].replace(b"eu", b"us")
    with pytest.raises(BadSignature):
        wire.decode(cbor2.dumps(tampered_body))
    bad_sig = list(frame)
    bad_sig[6] = bytes([bad_sig[6][0] ^ 1]) + bad_sig[6][1:]
    with pytest.raises(BadSignature):
        wire.decode(cbor2.dumps(bad_sig))
    other_signer = list(frame)
    other_signer[5] = MALLORY.peer_id.raw  # claims to be Mallory's, signed by Alice
    with pytest.raises(BadSignature):
        wire.decode(cbor2.dumps(other_signer))


def test_oversized_messages_are_refused_both_ways():
    with pytest.raises(MessageTooLarge):
        wire.encode(Ping(1, b"x" * 2000), max_size=1000)
    frame = wire.encode(Ping(1, b"x" * 2000))
    with pytest.raises(MessageTooLarge):
        wire.decode(frame, max_size=1000)


def test_unknown_version_and_type():
    good = cbor2.loads(wire.encode(Ping(1)))
    with pytest.raises(UnknownVersion):
        wire.decode(cbor2.dumps([2] + good[1:]))
    with pytest.raises(UnknownMessageType):
        wire.decode(cbor2.dumps(good[:3] + [65000] + good[4:]))


def test_wrong_field_types_are_rejected():
    body = cbor2.dumps({"nonce": "not an int"})
    with pytest.raises(WireError, match="nonce"):
        wire.decode(cbor2.dumps([1, 0, 0, wire.spec_of(Ping).code, body, None, None]))
    body = cbor2.dumps({"nonce": True})  # a bool is not an int on our wire
    with pytest.raises(WireError):
        wire.decode(cbor2.dumps([1, 0, 0, wire.spec_of(Ping).code, body, None, None]))


def test_unknown_fields_are_ignored_for_forward_compatibility():
    body = cbor2.dumps({"nonce": 5, "added_in_v2": [1, 2]})
    env = wire.decode(cbor2.dumps([1, 0, 0, wire.spec_of(Ping).code, body, None, None]))
    assert env.message == Ping(5)


def test_nested_claims_forwarded_by_a_third_party_verify():
    claims = tuple(wire.sign_claim(i, record(i)) for i in (ALICE, MALLORY))
    env = wire.decode(wire.encode(Peers(claims)))
    signers = [wire.open_claim(c, PeerRecord)[0] for c in env.message.records]
    assert signers == [ALICE.peer_id, MALLORY.peer_id]


VALID_FRAMES = [
    wire.encode(Ping(3, b"abc"), kind=Kind.REQUEST, request_id=9),
    wire.sign_claim(ALICE, record()),
    wire.encode(Hello(wire.sign_claim(ALICE, record())), identity=ALICE),
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_decoder_fuzz_random_bytes(data):
    try:
        wire.decode(data)
    except WireError:
        pass


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID_FRAMES), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 10_000))
def test_decoder_fuzz_mutated_frames(frame, flips, cut):
    data = bytearray(frame)
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[: max(1, cut % (len(data) + 1))])
    try:
        env = wire.decode(data)
    except WireError:
        return
    # anything that still decodes is a well-typed message; a signed one verified
    assert wire.spec_of(env.message).code > 0
    if wire.spec_of(env.message).signed:
        assert env.signer is not None


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=20))
def test_decoder_fuzz_random_cbor_structures(value):
    try:
        wire.decode(cbor2.dumps(value))
    except WireError:
        pass
    try:
        wire.decode(cbor2.dumps([1, 0, 0, wire.spec_of(Ping).code, cbor2.dumps(value), None, None]))
    except WireError:
        pass
