"""p2pcompute: a volunteer-powered peer-to-peer compute network.

Package map:
    errors.py     the one exception hierarchy (wire, transport, config, user errors)
    node/         the daemon: identity, config, wire format, Transport, libp2p, control API
    dht/          Kademlia discovery and provider records
    gossip/       SWIM + Lifeguard membership and capability dissemination
    storage/      content-addressed blocks and files, bitswap, data registry
    ops/          operators, tensor DSL, WebAssembly programs, sandboxed executor
    scheduler/    job specs, planning, placement, dispatch, verification
    cli/          the ``p2pcompute`` command (argument parsing and printing only)
    simulations/  in-memory network with virtual time and scenario runners
"""

__version__ = "0.1.0"
