"""Membership (SWIM + Lifeguard) and epidemic dissemination of capability records.

Files:
    membership.py  the membership state machine: probes, suspicion, health, gossip, push-pull
    events.py      its events, commands (Send, SetTimer, MemberChanged, ...) and MembershipConfig
    table.py       the member table, the lattice merge rule (join) and randomized probe order
    broadcast.py   the transmit-limited piggyback queue, bucketed by transmit count
    messages.py    wire types, codes 100–199: Ping, Ack, PingReq, Nack, Gossip, PushPull(Reply), Update
    capability.py  the signed capability record (cpus, memory, arch, opsets, slots, load, labels)
    probing.py     the probing half of Membership: pings, ping-reqs, nacks, local health
    dissemination.py  the dissemination half: piggybacks, gossip rounds, push-pull, joining
    service.py     the trio driver: a Membership on a node's Transport (a node Service)

The daemon runs ``MembershipService``; ``node/peering.py`` still bootstraps
connections and exchanges signed peer records.
"""
