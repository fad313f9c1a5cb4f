"""p2pcompute: a volunteer-powered peer-to-peer compute network.

Package map:
    errors.py     the one exception hierarchy (wire, transport, config, user errors)
    client.py     ``Client(data_dir).submit("job.yaml").wait()``: jobs from Python, through the local daemon
    tensor.py     the lazy tensor DSL (``from p2pcompute import tensor as t``)
    node/         the daemon: identity, config, wire format, Transport, libp2p, control API
    dht/          Kademlia discovery and provider records
    gossip/       SWIM + Lifeguard membership and capability dissemination
    storage/      content-addressed blocks and files, bitswap, data registry
    ops/          operators, tensor DSL, WebAssembly programs, sandboxed executor
    scheduler/    job specs, planning, placement, dispatch, verification
    training/     distributed training: models as opset-2 graphs, robust aggregation, the coordinator
    dashboard/    the web dashboard each daemon serves on its control API (pages, live updates, login)
    cli/          the ``p2pcompute`` command (argument parsing and printing only)
    simulations/  in-memory network with virtual time and scenario runners
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # ``from p2pcompute import Client`` without importing httpx for every user
    if name in ("Client", "Job", "JobFailed"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'p2pcompute' has no attribute {name!r}")
