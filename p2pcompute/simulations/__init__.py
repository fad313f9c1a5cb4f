"""Simulations: the in-memory network with virtual time, and scenario runners.

Files:
    memnet.py     MemNetwork + MemTransport: per-link latency, loss, bandwidth, partitions,
                  crash/restart, one heap-driven delivery task; deterministic_trio(seed)
    memstream.py  MemStream: ordered, flow-controlled byte streams over memnet links
    des.py        Engine: a plain discrete-event loop (one heap, virtual clock, seeded rng), no trio
    cluster.py    Cluster of SimPeers running the real Membership and Kademlia machines on the engine
    churn.py      the churn scenario (join wave, steady replacement, load) and its metrics
    wiresize.py   WireSizer: len(wire.encode(msg)) of a membership message, item sizes memoised
    report.py     report.json and the PNG plots of a churn run (matplotlib, Agg)
    jobs.py       the jobs scenario: workload at a load, churn, killed coordinators, metrics, report
    sched_peer.py SchedPeer: one peer's coordinator, replica and executor over the real scheduler machines
    jobs_report.py  report.json and the PNG plots of a jobs run (job latency, tasks per peer)
    trust.py      malicious executors (--malicious, --attack), judged accusations, the trust metrics
"""
