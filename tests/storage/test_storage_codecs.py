"""CID, dag-pb, UnixFS and CAR codecs: round trips (hypothesis) and decoders fuzzed with junk."""

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pcompute.errors import BadBlock, BadCid, HashMismatch, WireError
from p2pcompute.storage import car, dagpb, unixfs
from p2pcompute.storage.cid import (DAG_CBOR, DAG_PB, RAW, Cid, b58decode, b58encode, decode_varint,
                                    encode_varint, parse_cid)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cids = st.one_of(
    st.binary(max_size=64).map(lambda b: Cid.of(b, DAG_PB, 0)),
    st.tuples(st.binary(max_size=64), st.sampled_from([RAW, DAG_PB, DAG_CBOR])).map(
        lambda t: Cid.of(t[0], t[1], 1)),
    st.binary(max_size=40).map(lambda b: Cid(1, RAW, b"\x00" + encode_varint(len(b)) + b)),  # identity
)
names = st.one_of(st.none(), st.text(max_size=20))
links = st.builds(dagpb.PBLink, cids, names, st.one_of(st.none(), st.integers(0, 2**63 - 1)))
nodes = st.builds(dagpb.PBNode, st.lists(links, max_size=8).map(tuple), st.one_of(st.none(), st.binary(max_size=300)))
u64 = st.integers(0, 2**63 - 1)
fs_data = st.builds(
    unixfs.UnixFSData, st.integers(0, 5), st.one_of(st.none(), st.binary(max_size=200)), st.one_of(st.none(), u64),
    st.lists(u64, max_size=10).map(tuple), st.one_of(st.none(), u64), st.one_of(st.none(), u64),
    st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    st.one_of(st.none(), st.tuples(u64, st.one_of(st.none(), st.integers(1, 999_999_999)))))


# --- CIDs ------------------------------------------------------------------------


@FAST
@given(cids)
def test_cid_text_and_bytes_round_trip(cid):
    assert Cid.parse(str(cid)) == cid
    assert Cid.decode(cid.to_bytes()) == cid
    for base in ("base32", "base58btc", "base16"):
        assert parse_cid(cid.encode(base)) == cid
    assert str(cid).startswith("Qm" if cid.version == 0 else "b")


def test_cid_known_forms():
    v0 = Cid.parse("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    assert (v0.version, v0.codec) == (0, DAG_PB)
    assert str(v0.to_v1()) == "bafybeif7ztnhq65lumvvtr4ekcwd2ifwgm3awq4zfr3srh462rwyinlb4y"
    assert str(Cid.of(b"")) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert Cid.of(b"x").matches(b"x") and not Cid.of(b"x").matches(b"y")
    with pytest.raises(HashMismatch):
        Cid.of(b"x").verify(b"y")


@pytest.mark.parametrize("text", [
    "", "Qm", "Qmfoo", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ0",  # '0' is not base58
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykU",  # mixed case
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",  # truncated
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvykv",  # stray bits
    "xafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",  # unknown multibase
    "zQmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",  # v0 bytes in a multibase string
    "f0155" + "12" + "20" + "00" * 31,  # digest too short
    "f02551220" + "00" * 32,  # CID version 2
    "f01ff0112" + "20" + "00" * 32,  # unknown codec (non-minimal would also fail)
    "f0155a0" + "00" * 32,  # bad multihash varint
    "x" * 300,
])
def test_cid_parse_refuses(text):
    with pytest.raises(BadCid):
        Cid.parse(text)


def test_varints_are_minimal_and_bounded():
    for n in (0, 1, 127, 128, 300, 2**63 - 1):
        assert decode_varint(encode_varint(n)) == (n, len(encode_varint(n)))
    for bad in (b"\x80\x00", b"\x81\x80\x00", b"\x80", b"\xff" * 10):
        with pytest.raises(BadCid):
            decode_varint(bad)


@FAST
@given(st.binary(max_size=40))
def test_base58_round_trip(data):
    assert b58decode(b58encode(data)) == data


@FAST
@given(st.binary(max_size=80))
def test_cid_decode_fuzz(junk):
    try:
        cid = Cid.decode(junk)
    except BadCid:
        return
    assert cid.to_bytes() == junk  # whatever parses re-encodes to the same bytes


@FAST
@given(st.text(max_size=80))
def test_cid_parse_fuzz(text):
    try:
        cid = Cid.parse(text)
    except BadCid:
        return
    assert Cid.parse(str(cid)) == cid


# --- dag-pb ---------------------------------------------------------------------------


def _canonical(node: dagpb.PBNode) -> dagpb.PBNode:
    return dagpb.PBNode(tuple(sorted(node.links, key=lambda link: (link.name or "").encode())), node.data)


@FAST
@given(nodes)
def test_dagpb_round_trip(node):
    encoded = dagpb.encode(node)
    decoded = dagpb.decode(encoded)
    assert decoded == _canonical(node)
    assert dagpb.encode(decoded) == encoded


def test_dagpb_known_bytes():
    # the empty UnixFS file as kubo stores it: PBNode{Data: UnixFS{Type: File, filesize: 0}}
    assert dagpb.encode(dagpb.PBNode((), b"\x08\x02\x18\x00")) == bytes.fromhex("0a0408021800")
    link = dagpb.PBLink(Cid.of(b"a", RAW), "", 1)
    assert dagpb.encode(dagpb.PBNode((link,))) == b"\x12" + bytes([len(dagpb.encode_link(link))]) + \
        dagpb.encode_link(link)


@pytest.mark.parametrize("block", [
    b"\x0a\x00\x12\x00",  # a link after Data
    b"\x0a\x00\x0a\x00",  # Data twice
    b"\x12\x00",  # link without Hash
    b"\x1a\x00",  # unknown field 3
    b"\x0a\x05ab",  # runs past the end
    b"\x08\x01",  # wrong wire type for Data
    b"\x12\x04\x0a\x02\x12\x20",  # hash is not a CID
])
def test_dagpb_refuses(block):
    with pytest.raises(BadBlock):
        dagpb.decode(block)


def test_dagpb_refuses_out_of_order_link_fields():
    cid = Cid.of(b"a", RAW).to_bytes()
    link = b"\x12\x00" + b"\x0a" + bytes([len(cid)]) + cid  # Name before Hash
    with pytest.raises(BadBlock):
        dagpb.decode(b"\x12" + bytes([len(link)]) + link)


@FAST
@given(st.binary(max_size=200))
def test_dagpb_decode_fuzz(junk):
    try:
        node = dagpb.decode(junk)
    except BadBlock:
        return
    assert dagpb.decode(dagpb.encode(node)) == _canonical(node)


@FAST
@given(nodes, st.integers(0, 10_000), st.integers(0, 255))
def test_dagpb_mutations_raise_only_our_errors(node, where, value):
    encoded = bytearray(dagpb.encode(node))
    if encoded:
        encoded[where % len(encoded)] = value
    for cut in (len(encoded), len(encoded) // 2):
        try:
            dagpb.decode(bytes(encoded[:cut]))
        except WireError:
            pass


# --- UnixFS ----------------------------------------------------------------------------


@FAST
@given(fs_data)
def test_unixfs_round_trip(msg):
    assert unixfs.decode(unixfs.encode(msg)) == msg


def test_unixfs_known_bytes_and_packed_blocksizes():
    assert unixfs.encode(unixfs.UnixFSData(unixfs.DIRECTORY)) == unixfs.DIRECTORY_DATA
    assert unixfs.encode(unixfs.UnixFSData(unixfs.FILE, b"hi", 2)) == b"\x08\x02\x12\x02hi\x18\x02"
    packed = b"\x08\x02\x18\x05\x22\x02\x02\x03"
    assert unixfs.decode(packed).blocksizes == (2, 3)


@pytest.mark.parametrize("raw", [b"", b"\x12\x00", b"\x08\x09", b"\x08\x02\x08\x02", b"\x18\x01\x08\x02",
                                 b"\x08\x02\x50\x01", b"\x08\x02\x38\x80\x80\x80\x80\x10",
                                 b"\x08\x02\x42\x02\x10\x01", b"\x08\x02\x42\x07\x08\x01\x15\x00\x00\x00\x00"])
def test_unixfs_refuses(raw):
    with pytest.raises(BadBlock):
        unixfs.decode(raw)


@FAST
@given(st.binary(max_size=100))
def test_unixfs_decode_fuzz(junk):
    try:
        msg = unixfs.decode(junk)
    except BadBlock:
        return
    assert unixfs.decode(unixfs.encode(msg)) == msg


# --- CAR ---------------------------------------------------------------------------------


blocks_strategy = st.lists(st.tuples(st.binary(max_size=300), st.sampled_from([RAW, DAG_CBOR])), max_size=12)


@FAST
@given(blocks_strategy, st.integers(0, 3))
def test_car_round_trip(items, nroots):
    blocks = [(Cid.of(data, codec), data) for data, codec in items]
    roots = [cid for cid, _ in blocks[:nroots]] or [Cid.of(b"root")]
    out = io.BytesIO()
    writer = car.CarWriter(out, roots)
    for cid, data in blocks:
        writer.write(cid, data)
    reader = car.CarReader(io.BytesIO(out.getvalue()))
    assert reader.roots == roots
    assert list(reader) == blocks
    assert reader.blocks == len(blocks)


def _car(roots, blocks) -> bytes:
    out = io.BytesIO()
    writer = car.CarWriter(out, roots)
    for cid, data in blocks:
        writer.write(cid, data)
    return out.getvalue()


def test_car_rejects_a_block_that_does_not_match_its_cid():
    cid = Cid.of(b"good")
    raw = _car([cid], [(cid, b"good")]).replace(b"good", b"evil")
    with pytest.raises(HashMismatch):
        list(car.CarReader(io.BytesIO(raw)))


def test_car_refuses_carv2_truncation_and_oversize():
    v2 = bytes.fromhex("0aa16776657273696f6e02") + b"\x00" * 40
    with pytest.raises(BadBlock, match="CARv2"):
        car.CarReader(io.BytesIO(v2))
    good = _car([Cid.of(b"a")], [(Cid.of(b"a"), b"a")])
    with pytest.raises(BadBlock):
        list(car.CarReader(io.BytesIO(good[:-1])))
    header = car.encode_header([Cid.of(b"a")])
    huge = encode_varint(len(header)) + header + encode_varint(64 * 1024 * 1024)
    with pytest.raises(BadBlock, match="limit"):
        list(car.CarReader(io.BytesIO(huge)))
    with pytest.raises(BadBlock):
        car.CarReader(io.BytesIO(b""))


@FAST
@given(st.binary(max_size=300))
def test_car_reader_fuzz(junk):
    try:
        list(car.CarReader(io.BytesIO(junk)))
    except WireError:
        pass


@FAST
@given(blocks_strategy.filter(bool), st.integers(0, 10_000), st.integers(0, 255))
def test_car_mutations_raise_only_our_errors(items, where, value):
    blocks = [(Cid.of(data, codec), data) for data, codec in items]
    raw = bytearray(_car([blocks[0][0]], blocks))
    raw[where % len(raw)] = value
    try:
        list(car.CarReader(io.BytesIO(bytes(raw))))
    except WireError:
        pass
