"""Who holds a task's inputs, from the DHT: bounded lookups, a bounded cache, a bounded wait per task.

Theory of operation
-------------------
Placement prefers the peers that hold a task's input (its ``providers``
hints). The coordinator knows some holders by itself (the executor whose
result it took; itself, once it fetched it: ``SchedulerService._note``). An
input added and pinned on another peer it learns of only from the DHT, where
the storage service announces every root it pins. ``ProviderLookups`` asks
the DHT for the input CIDs of a ``Dispatch`` that have no known holder:

* **Records here first.** A provider record announced to this peer (in a
  small network every peer gets every ADD_PROVIDER) answers at once; only a
  CID with none here takes a network lookup (the service's ``_dht_providers``).
* **One lookup per CID**, however many tasks read it, and at most
  ``max_inflight`` lookups at once; a CID waits for a free slot.
* **Bounded in time.** A lookup gives up after ``timeout_s``. A task waits
  for its own CIDs at most ``timeout_s`` from when it asked (the slot wait
  included), then is placed with what is known then, maybe no hints at all.
  Only the tasks reading that CID wait: the others are placed at once.
  A lookup that outlives its tasks' wait still fills the cache for later ones.
* **Cached.** ``ProviderCache``: what a lookup found, for ``ttl_s``; that it
  found nobody, for ``negative_ttl_s`` (so that the thousand tasks of a map
  over one missing CID make one lookup, and a CID announced a moment later
  is found soon after); at most ``max_entries`` CIDs, the least recently
  used dropped. The cache is pure (``now`` passed in).

Nobody found is not yet a verdict. The coordinator then asks for the CID's
root block itself (``probe_root``: the storage service's fetch, which asks
the connected peers and dials the DHT's providers, stopped at the first
block; at most ``probe_s``), once per CID however many tasks read it (``absent``), the
answer cached for ``absent_ttl_s``. Nobody serving it either fails the task
at once with "input not found" (``Placed.missing``): about ``timeout_s +
probe_s`` (12 s) instead of two executors' fetch timeouts and a backoff
(121 s with the defaults). A root block served, or no verdict (the lookup
cut short, no DHT), and the task is placed as before: its executor's own
fetch, bounded by ``fetch_timeout_s``, decides, and the same failure on two
peers fails the task (job_state.py).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LookupConfig:
    max_inflight: int = 8            # DHT lookups at once
    timeout_s: float = 2.0           # a lookup gives up, and a task stops waiting, after this
    ttl_s: float = 60.0              # providers found are trusted this long
    negative_ttl_s: float = 5.0      # "nobody found" is trusted this long
    max_entries: int = 10_000        # CIDs cached (least recently used dropped)
    want: int = 8                    # providers asked of the DHT per CID
    probe_s: float = 10.0            # a CID with no provider: its root block is sought this long
    absent_ttl_s: float = 30.0       # a CID nobody served is known to be missing this long


class ProviderCache:
    """CID -> (peers, expiry): bounded, least recently used dropped first. Pure: ``now`` is passed in."""

    def __init__(self, max_entries: int, ttl_s: float, negative_ttl_s: float) -> None:
        self.max_entries, self.ttl_s, self.negative_ttl_s = max_entries, ttl_s, negative_ttl_s
        self._entries: OrderedDict[str, tuple[tuple[str, ...], float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, cid: str, now: float) -> tuple[str, ...] | None:
        """The peers cached for ``cid`` (maybe none found), or None: unknown or expired."""
        entry = self._entries.get(cid)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[cid]
            return None
        self._entries.move_to_end(cid)
        return entry[0]

    def put(self, cid: str, peers: Iterable[str], now: float) -> None:
        peers = tuple(dict.fromkeys(peers))
        self._entries[cid] = (peers, now + (self.ttl_s if peers else self.negative_ttl_s))
        self._entries.move_to_end(cid)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class ProviderLookups:
    """The DHT lookups of one coordinator. ``find(cid)`` -> peer-id strings (may raise ``Exception``)."""

    def __init__(self, find: Callable[[str], Awaitable[list[str]]], config: LookupConfig | None = None) -> None:
        self.config = config or LookupConfig()
        self.cache = ProviderCache(self.config.max_entries, self.config.ttl_s, self.config.negative_ttl_s)
        self._find = find
        self._slots = trio.Semaphore(self.config.max_inflight)
        self._pending: dict[str, trio.Event] = {}          # CID -> set when its lookup ends
        self.stats = {"lookups": 0, "found": 0, "empty": 0, "failed": 0, "timed_out": 0, "waits_cut": 0,
                      "probes": 0, "absent": 0}
        self._probes: dict[str, trio.Event] = {}           # CID -> set when its probe ends
        self._absent = ProviderCache(self.config.max_entries, self.config.absent_ttl_s, self.config.absent_ttl_s)

    def known(self, cid: str) -> tuple[str, ...] | None:
        return self.cache.get(cid, trio.current_time())

    def unknown(self, cids: Iterable[str]) -> list[str]:
        """Those of ``cids`` nothing is cached for (a lookup is wanted or running)."""
        now = trio.current_time()
        return [c for c in dict.fromkeys(cids) if self.cache.get(c, now) is None]

    async def resolve(self, nursery: trio.Nursery, cids: Iterable[str]) -> None:
        """Look ``cids`` up (those not cached or being looked up); return once all ended or ``timeout_s`` passed.

        The lookups run in ``nursery``, so that one cut short here still ends (bounded) and is cached.
        """
        events = []
        for cid in self.unknown(cids):
            if cid not in self._pending:
                if len(self._pending) >= self.config.max_entries:   # bounded even if the DHT hangs
                    continue
                self._pending[cid] = trio.Event()
                nursery.start_soon(self._lookup, cid)
            events.append(self._pending[cid])
        with trio.move_on_after(self.config.timeout_s) as scope:
            for event in events:
                await event.wait()
        if scope.cancelled_caught:
            self.stats["waits_cut"] += 1

    async def settle(self, cids: Iterable[str]) -> None:
        """Wait for the lookups of ``cids`` still running to end (each ends within ``timeout_s`` of its start:
        ``resolve``'s wait, begun first, is cut just before a lookup that times out)."""
        with trio.move_on_after(self.config.timeout_s):
            for cid in list(cids):
                event = self._pending.get(cid)
                if event is not None:
                    await event.wait()

    def nobody(self, cids: Iterable[str]) -> list[str]:
        """Those of ``cids`` whose lookup found no provider (cached)."""
        return [c for c in dict.fromkeys(cids) if self.known(c) == ()]

    async def absent(self, cid: str, probe: Callable[[str], Awaitable[str]]) -> str:
        """Why nobody serves ``cid`` ("" when somebody does, or when it cannot be told): ``probe(cid)`` asks
        (one probe per CID at a time, bounded by the probe); a "missing" answer is cached for ``absent_ttl_s``."""
        now = trio.current_time()
        cached = self._absent.get(cid, now)
        if cached is not None:
            return cached[0] if cached else ""
        if cid not in self._probes:
            if len(self._probes) >= self.config.max_entries:
                return ""
            self._probes[cid] = trio.Event()
            try:
                self.stats["probes"] += 1
                why = ""
                try:
                    why = await probe(cid)
                except Exception as exc:      # a probe that breaks tells nothing: the executors decide
                    log.debug("probe of %s failed: %s", cid, exc)
                if why:
                    self.stats["absent"] += 1
                    self._absent.put(cid, [why], trio.current_time())
            finally:
                self._probes.pop(cid).set()
            return why
        await self._probes[cid].wait()
        cached = self._absent.get(cid, trio.current_time())
        return cached[0] if cached else ""

    async def _lookup(self, cid: str) -> None:
        peers: list[str] = []
        try:
            with trio.move_on_after(self.config.timeout_s) as scope:   # the slot wait counts too
                async with self._slots:
                    self.stats["lookups"] += 1
                    peers = [str(p) for p in await self._find(cid)]
            if scope.cancelled_caught:
                self.stats["timed_out"] += 1
            self.stats["found" if peers else "empty"] += 1
        except Exception as exc:         # a malformed CID, the DHT not running: no hints, never fatal
            self.stats["failed"] += 1
            log.debug("provider lookup of %s failed: %s", cid, exc)
        finally:
            self.cache.put(cid, peers, trio.current_time())
            self._pending.pop(cid).set()


async def probe_root(node: Any, cid_text: str, timeout: float) -> str:
    """"" when the root block of ``cid_text`` is here or some peer serves it within ``timeout`` s (the storage
    service's fetch: the connected peers at once, the DHT's providers dialled; stopped at the first block);
    else why not. A CID that does not parse, or no bitswap: "" (the executor decides)."""
    from ..errors import P2PComputeError
    from ..storage.cid import Cid

    try:
        cid = Cid.parse(cid_text)
    except (P2PComputeError, ValueError):
        return ""
    storage = node.services["storage"]
    if node.services.get("bitswap") is None or await trio.to_thread.run_sync(storage.blockstore.has, cid):
        return ""
    with trio.CancelScope() as scope:
        def heard(event: dict) -> None:
            if event.get("phase") == "fetching" and event.get("blocks", 0) >= 1:
                scope.cancel()                    # somebody serves it: the rest is the executor's to fetch

        try:
            await storage.fetch(cid, pin=False, timeout=timeout, progress=heard)
        except P2PComputeError as exc:
            return f"no provider in the DHT, and no peer served it within {timeout:g} s ({str(exc)[:300]})"
    return ""
