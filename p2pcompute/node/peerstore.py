"""py-libp2p's peerstore, made safe for a daemon that meets many peers.

py-libp2p 0.8.1's ``PeerStore`` holds at most 1000 peers and, when full,
evicts whichever sorts first, our own entry included; the next identify
asks the peerstore for our public key, raises ``PeerStoreError`` and takes
the daemon down. ``SafePeerStore``:

* answers our own keys from the key pair it was given, whatever was evicted;
* evicts, beyond ``max_peers``, peers with no open connection, oldest first,
  down to 90 % (a batch, so that a full store is not re-sorted per insert).

``guard_handlers`` wraps libp2p's own stream handlers (identify, ping...) so
that an exception in one is logged at debug and resets that stream instead
of crashing the swarm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from libp2p.peer.peerstore import PeerStore

log = logging.getLogger(__name__)


class SafePeerStore(PeerStore):
    def __init__(self, local: Any, key_pair: Any, max_peers: int, connected: Callable[[Any], bool]) -> None:
        super().__init__(max_records=max_peers, max_peers=max_peers)
        self._local = local
        self._key_pair = key_pair
        self._connected = connected
        self.evictions = 0

    def pubkey(self, peer_id: Any) -> Any:
        if peer_id == self._local:
            return self._key_pair.public_key
        return super().pubkey(peer_id)

    def privkey(self, peer_id: Any) -> Any:
        if peer_id == self._local:
            return self._key_pair.private_key
        return super().privkey(peer_id)

    def add_pubkey(self, peer_id: Any, pubkey: Any) -> None:
        super().add_pubkey(peer_id, pubkey)  # libp2p bounds the store only when addresses are added
        if len(self.peer_data_map) > self.max_peers:
            self._enforce_peer_limit()

    def _enforce_peer_limit(self) -> None:
        if len(self.peer_data_map) <= self.max_peers:
            return
        excess = len(self.peer_data_map) - self.max_peers * 9 // 10
        victims = [pid for pid in self.peer_data_map if pid != self._local and not self._safe_connected(pid)]
        if len(victims) < excess:  # all connected (beyond max_connections?): the oldest go all the same
            chosen = set(victims)
            victims += [pid for pid in self.peer_data_map if pid != self._local and pid not in chosen]
        for pid in victims[:excess]:
            self.peer_record_map.pop(pid, None)
            self.peer_data_map.pop(pid, None)
        self.evictions += min(excess, len(victims))
        log.debug("peerstore: evicted %d peers without a connection", min(excess, len(victims)))

    def _safe_connected(self, pid: Any) -> bool:
        try:
            return bool(self._connected(pid))
        except Exception:
            return False


def guard_handlers(host: Any, ours: set[str]) -> None:
    """Wrap libp2p's own stream handlers so that none can raise into the swarm."""
    handlers = host.get_mux().handlers
    for protocol, handler in list(handlers.items()):
        if protocol in ours or handler is None or getattr(handler, "_guarded", False):
            continue
        handlers[protocol] = _guarded(protocol, handler)


def _guarded(protocol: str, handler: Any) -> Any:
    async def guarded(stream: Any) -> None:
        try:
            await handler(stream)
        except Exception as exc:
            log.debug("libp2p %s handler failed: %s: %s", protocol, type(exc).__name__, exc)
            try:
                await stream.reset()
            except Exception:
                pass

    guarded._guarded = True  # type: ignore[attr-defined]
    return guarded
