"""Job specs, planning, placement, dispatch with leases, retries and verification.

Nothing is implemented here yet; a later issue fills it.
"""
