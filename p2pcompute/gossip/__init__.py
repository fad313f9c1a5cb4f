"""Membership (SWIM + Lifeguard) and epidemic dissemination of capability records.

Nothing is implemented here yet; issue 3 (membership and discovery) fills it.
Until then the daemon learns peers by a simple signed peer exchange in
``node/peering.py``.
"""
