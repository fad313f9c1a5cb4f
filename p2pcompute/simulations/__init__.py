"""Simulations: the in-memory network with virtual time, and scenario runners.

Files:
    memnet.py     MemNetwork + MemTransport: per-link latency, loss, bandwidth, partitions,
                  crash/restart, one heap-driven delivery task; deterministic_trio(seed)
    memstream.py  MemStream: ordered, flow-controlled byte streams over memnet links
"""
