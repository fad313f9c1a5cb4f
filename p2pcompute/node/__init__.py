"""The peer daemon and what every protocol stands on.

Files:
    identity.py          ed25519 key in the data dir and the libp2p peer ID (PeerId, Identity)
    wire.py              versioned CBOR envelope, message registry, signing, safe decoding
    messages.py          the node's own message types (ping, hello, peer exchange, errors)
    framing.py           varint-length frames on byte streams; the Stream protocol
    transport.py         the Transport interface and its shared request/dispatch machinery
    libp2p_transport.py  Transport over py-libp2p: TCP + Noise + yamux
    inbound.py           our TCP listener for libp2p: exclusive port, inbound slots released and capped
    ratelimit.py         per-key token buckets (pure): inbound kad requests per peer, handshakes per IP
    peerstore.py         libp2p's peerstore that never evicts our own key, and guarded libp2p handlers
    addrs.py             pure rules: which of our addresses to announce, which of a peer's to keep
    peering.py           pure state machine: bootstrap, dial backoff, rejoin, target peers
    node.py              the Node: a Transport, the node's own protocols, and its services
    service.py           the Service protocol by which gossip, dht, storage... plug into a Node
    config.py            defaults < config.toml < P2PCOMPUTE_* env < flags; the data dir
    api.py               the control API (HTTP + JSON on 127.0.0.1, token-authenticated)
    client.py            the control API's client, found through the data dir
    metrics.py           Prometheus metrics read from the node's counters
    daemon.py            running a daemon: lock, logging, signals, API files; stopping one (``stop``)
    devnet.py            N real daemons as OS processes on loopback
    demo.py              the steps of ``p2pcompute demo`` on a devnet: a scene added on one peer, its job run there
"""
