"""Kademlia discovery: routing table, iterative lookups, provider and value records.

Nothing is implemented here yet; issue 3 (membership and discovery) fills it.
Files (planned):
    (routing table, lookup state machine, kad protobuf codec, trio driver)
"""
