"""Kademlia discovery: routing table, iterative lookups, provider and value records.

All of it is pure logic (events and ``now`` in, commands out); a trio driver
over the Transport (libp2p or memnet) runs it. Files:
    keys.py       256-bit keys (SHA-256), XOR distance, common-prefix length, refresh-key pre-image table
    routing.py    routing table: 256 CPL-indexed k-buckets (closest by bucket walk), replacements, ping-to-evict, refresh
    lookup.py     iterative lookup state machine (FIND_NODE / GET_PROVIDERS / GET_VALUE), disjoint paths
    providers.py  provider store with expiry, ADD_PROVIDER rule, republish schedule
    records.py    signed value records (/p2pc/<peer>/<name>), validation, newest-wins store
    pb.py         the libp2p kad-dht protobuf message codec, binary multiaddr helpers
    server.py     answers to kad requests from the routing table and stores
    driver.py     trio plumbing: kad streams out (one reused stream per peer) and in (bounded), lookup runner
    service.py    DhtService: the node service (bootstrap, refresh, provide/find, values, control API)
"""
