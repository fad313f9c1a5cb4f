"""WireSizer gives exactly the length of the real encoding, for short and long messages."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pcompute.gossip.messages import ALIVE, DEAD, SUSPECT, Ack, Gossip, Ping, PingReq, PushPull, PushPullReply, Update
from p2pcompute.node import wire
from p2pcompute.node.identity import Identity
from p2pcompute.simulations.wiresize import WireSizer

IDS = [Identity.from_seed(bytes([i]) * 32).peer_id for i in range(1, 41)]

updates = st.builds(
    Update, st.sampled_from(IDS), st.sampled_from([ALIVE, SUSPECT, DEAD]), st.integers(0, 2**40),
    st.lists(st.sampled_from(IDS), max_size=8).map(tuple), st.text(max_size=80),
)
facts = st.lists(updates, max_size=300).map(tuple)
claims = st.lists(st.binary(max_size=300), max_size=40).map(tuple)
versions = st.lists(st.tuples(st.sampled_from(IDS), st.integers(0, 2**33)), max_size=300).map(tuple)
messages = st.one_of(
    st.builds(Ping, st.integers(0, 2**63 - 1), facts.map(lambda t: t[:256]), claims),
    st.builds(Ack, st.integers(0, 2**20), facts.map(lambda t: t[:256]), claims),
    st.builds(PingReq, st.integers(0, 2**63 - 1), st.sampled_from(IDS), st.floats(0, 60), facts.map(lambda t: t[:256])),
    st.builds(Gossip, facts.map(lambda t: t[:256]), claims),
    st.builds(PushPull, facts, versions, st.booleans()),
    st.builds(PushPullReply, facts, claims, versions),
)


@settings(max_examples=150, deadline=None)
@given(messages)
def test_size_is_the_length_of_the_real_encoding(msg):
    sizer = WireSizer()
    real = len(wire.encode(msg, max_size=1 << 30))
    assert sizer.size(msg) == real
    assert sizer.size(msg) == real  # memoised item sizes give the same answer


def test_a_big_push_pull_is_sized_exactly():
    sizer = WireSizer()
    members = tuple(Update(p, ALIVE, 0, (), f"/ip4/10.0.0.{k}/tcp/4001/p2p/{p.text}") for k, p in enumerate(IDS * 30))
    msg = PushPull(members, tuple((p, 3) for p in IDS), True)
    assert sizer.size(msg) == len(wire.encode(msg, max_size=1 << 30)) > 60_000
