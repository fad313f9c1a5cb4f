"""How a protocol plugs into a Node: the ``Service`` protocol.

A service (membership, the DHT, storage, the scheduler) is given the node in
``attach`` — where it registers its handlers on ``node.transport`` — and
then runs its driver in the node's nursery (``run``). It may add control-API
routes and a section to ``status``. The node knows nothing else about it, so
each issue adds a service without touching ``node.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .node import Node

# handler(body bytes, query dict) -> (HTTP status, content type, payload bytes)
Route = Callable[[bytes, dict[str, str]], Awaitable[tuple[int, str, bytes]]]


class Service(Protocol):
    name: str  # its section in status, e.g. "membership", "dht"

    def attach(self, node: Node) -> None:
        """Register handlers on ``node.transport``; called before anything runs."""

    async def run(self, *, task_status: Any) -> None:
        """Drive the protocol until cancelled; ``task_status.started()`` once usable."""

    def status(self) -> dict[str, Any]:
        """A small summary merged into the node's status under ``name``."""

    def api_routes(self) -> dict[tuple[str, str], Route]:
        """Extra control-API routes, keyed by (method, path)."""
