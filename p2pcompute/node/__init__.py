"""The peer daemon and what every protocol stands on.

Files:
    identity.py          ed25519 key in the data dir and the libp2p peer ID (PeerId, Identity)
    wire.py              versioned CBOR envelope, message registry, signing, safe decoding
    messages.py          the node's own message types (ping, hello, peer exchange, errors)
    framing.py           varint-length frames on byte streams; the Stream protocol
    transport.py         the Transport interface and its shared request/dispatch machinery
    libp2p_transport.py  Transport over py-libp2p: TCP + Noise + yamux
"""
