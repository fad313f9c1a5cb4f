"""Content-addressed storage: UnixFS import, blockstore, bitswap, data registry.

Nothing is implemented here yet; issue 4 (content-addressed storage) fills it.
"""
