import os
import stat

import pytest
from hypothesis import given, strategies as st

from p2pcompute.errors import ConfigError
from p2pcompute.node.identity import Identity, PeerId


def test_peer_id_is_the_libp2p_one():
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    ident = Identity.generate()
    theirs = ID.from_pubkey(create_new_key_pair(ident.seed).public_key).to_base58()
    assert str(ident.peer_id) == theirs
    assert theirs.startswith("12D3KooW")


def test_key_is_made_once_with_mode_0600_and_reused(tmp_path):
    first = Identity.load_or_create(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "identity.key").st_mode)
    assert mode == 0o600
    again = Identity.load_or_create(tmp_path)
    assert again.peer_id == first.peer_id


def test_key_readable_by_others_is_refused(tmp_path):
    Identity.load_or_create(tmp_path)
    os.chmod(tmp_path / "identity.key", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Identity.load_or_create(tmp_path)


def test_corrupt_key_file_is_a_clear_error(tmp_path):
    (tmp_path / "identity.key").write_bytes(b"garbage")
    os.chmod(tmp_path / "identity.key", 0o600)
    with pytest.raises(ConfigError, match="move it away"):
        Identity.load_or_create(tmp_path)


@given(st.binary(min_size=32, max_size=32))
def test_peer_id_text_round_trip_and_signatures(seed):
    ident = Identity.from_seed(seed)
    parsed = PeerId.from_string(str(ident.peer_id))
    assert parsed == ident.peer_id
    sig = ident.sign(b"claim")
    assert parsed.verify(b"claim", sig)
    assert not parsed.verify(b"claim!", sig)


@pytest.mark.parametrize("text", ["", "hello", "12D3KooW", "1" * 60])
def test_bad_peer_id_strings(text):
    with pytest.raises(ValueError):
        PeerId.from_string(text)


def test_rsa_and_secp256k1_peer_ids_parse_but_cannot_sign_claims():
    from libp2p.crypto.rsa import create_new_key_pair as rsa_pair
    from libp2p.crypto.secp256k1 import create_new_key_pair as secp_pair
    from libp2p.peer.id import ID

    for make, prefix in ((rsa_pair, "Qm"), (secp_pair, "16Uiu2")):
        text = ID.from_pubkey(make().public_key).to_base58()
        peer = PeerId.from_string(text)
        assert str(peer) == text and text.startswith(prefix)
        assert not peer.is_ed25519 and not peer.verify(b"x", b"y" * 64)
        with pytest.raises(ValueError):
            peer.public_key
    assert Identity.generate().peer_id.is_ed25519
