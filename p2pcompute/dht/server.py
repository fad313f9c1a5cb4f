"""Answers to kad requests from other peers, as a pure function of our tables.

Theory of operation
-------------------
``KadServer.handle(sender, request, now)`` returns the reply message, or
``None`` when the protocol sends none (ADD_PROVIDER), and raises only
``WireError`` for a request it refuses (the driver logs it with the peer and
resets the stream). It reads and updates the routing table, the provider
store and the record store it was given, and asks ``addrs_of(peer)`` (the
driver's address book) for the binary multiaddrs to put next to each peer it
names. A driver whose address book never changes (the simulation) may pass
``kad_peer_of(peer)`` instead, returning the whole ``pb.KadPeer`` (built once
per peer rather than once per answer). It does not feed the routing table:
the driver calls ``table.on_seen(sender, now)`` for a sender that proved it
speaks the DHT.

The answers follow go-libp2p-kad-dht: FIND_NODE names the ``k`` peers of our
table closest to ``SHA-256(key)`` (never the asker); GET_PROVIDERS adds the
providers we hold; GET_VALUE adds the record we hold; PUT_VALUE validates and
stores the record and echoes the request; PING echoes.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import WireError
from ..node.identity import PeerId
from . import pb
from .keys import key_of
from .providers import ProviderStore, accept_add_provider
from .records import RecordStore
from .routing import RoutingTable

MAX_KEY = 1024  # bytes in a request's key field
FIND_NODE, GET_PROVIDERS, ADD_PROVIDER, PUT_VALUE, PING = (
    pb.MessageType.FIND_NODE, pb.MessageType.GET_PROVIDERS, pb.MessageType.ADD_PROVIDER, pb.MessageType.PUT_VALUE,
    pb.MessageType.PING,
)


class KadServer:
    def __init__(
        self,
        table: RoutingTable,
        providers: ProviderStore,
        records: RecordStore,
        *,
        k: int = 20,
        addrs_of: Callable[[PeerId], tuple[bytes, ...]] = lambda peer: (),
        kad_peer_of: Callable[[PeerId], pb.KadPeer] | None = None,
    ) -> None:
        self.table = table
        self.providers = providers
        self.records = records
        self.k = k
        self.addrs_of = addrs_of
        self.kad_peer_of = kad_peer_of if kad_peer_of is not None else self._kad_peer

    def _kad_peer(self, peer: PeerId) -> pb.KadPeer:
        return pb.kad_peer(peer, self.addrs_of(peer))

    def handle(self, sender: PeerId, msg: pb.KadMessage, now: float) -> pb.KadMessage | None:
        if len(msg.key) > MAX_KEY:
            raise WireError(f"kad key of {len(msg.key)} bytes is over the {MAX_KEY}-byte limit")
        kind = msg.type
        if kind is FIND_NODE:
            return pb.KadMessage(kind, msg.key, closer_peers=self._closer(sender, msg.key))
        if kind is PING:
            return pb.KadMessage(PING)
        if kind is ADD_PROVIDER:
            self._add_provider(sender, msg, now)
            return None
        if kind is PUT_VALUE:
            return self._put_value(msg, now)
        closer = self._closer(sender, msg.key)
        if kind is GET_PROVIDERS:
            held = self.providers.get(msg.key, now, limit=self.k)
            providers = tuple(
                pb.kad_peer(r.provider, r.addrs) if r.addrs else self.kad_peer_of(r.provider) for r in held
            )
            return pb.KadMessage(kind, msg.key, closer_peers=closer, provider_peers=providers)
        # GET_VALUE
        record = self.records.get(msg.key, now)
        kad_record = None if record is None else pb.KadRecord(msg.key, record.encode())
        return pb.KadMessage(kind, msg.key, record=kad_record, closer_peers=closer)

    def _closer(self, sender: PeerId, key: bytes) -> tuple[pb.KadPeer, ...]:
        peers = self.table.closest(key_of(key), self.k, exclude=(sender,))
        return tuple(map(self.kad_peer_of, peers))

    def _add_provider(self, sender: PeerId, msg: pb.KadMessage, now: float) -> None:
        if not msg.key:
            raise WireError("ADD_PROVIDER without a key")
        announced = [(pid, p.addrs) for p in msg.provider_peers if (pid := pb.peer_id_of(p)) is not None]
        for peer, addrs in accept_add_provider(sender, announced):
            self.providers.add(msg.key, peer, now, addrs)

    def _put_value(self, msg: pb.KadMessage, now: float) -> pb.KadMessage:
        if msg.record is None or msg.record.key != msg.key:
            raise WireError("PUT_VALUE needs a record whose key is the message key")
        self.records.put(msg.key, msg.record.value, now)  # raises WireError if invalid
        return msg
