"""providers.py: the provider cache (pure: bounded, expiring) and the lookups (bounded, one per CID, a
bounded wait that delays only the tasks reading a slow CID). Time is trio's mock clock (autojump)."""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st

from p2pcompute.scheduler.providers import LookupConfig, ProviderCache, ProviderLookups


def test_the_cache_keeps_found_peers_longer_than_nobody_found_and_drops_the_least_recently_used():
    cache = ProviderCache(max_entries=2, ttl_s=60.0, negative_ttl_s=5.0)
    cache.put("a", ["p1", "p2", "p1"], now=0.0)
    cache.put("b", [], now=0.0)
    assert cache.get("a", 1.0) == ("p1", "p2") and cache.get("b", 1.0) == ()
    assert cache.get("b", 5.0) is None and cache.get("a", 59.9) == ("p1", "p2") and cache.get("a", 60.0) is None
    cache.put("a", ["p1"], 100.0)
    cache.put("b", ["p2"], 100.0)
    cache.get("a", 101.0)                  # a used last: b goes first
    cache.put("c", ["p3"], 101.0)
    assert cache.get("b", 102.0) is None and cache.get("a", 102.0) == ("p1",) and len(cache) == 2


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.lists(st.sampled_from(["p", "q"]), max_size=2),
                          st.floats(0, 10)), max_size=60))
def test_the_cache_is_bounded_and_answers_the_last_put_until_it_expires(ops):
    cache = ProviderCache(max_entries=3, ttl_s=4.0, negative_ttl_s=1.0)
    now, last = 0.0, {}
    for cid, peers, dt in ops:
        now += dt
        cache.put(cid, peers, now)
        last[cid] = (tuple(dict.fromkeys(peers)), now + (4.0 if peers else 1.0))
        assert len(cache) <= 3
        got = cache.get(cid, now + 0.5)
        assert got == (last[cid][0] if now + 0.5 < last[cid][1] else None)


async def test_a_slow_lookup_delays_only_its_own_tasks_and_is_cut_at_the_timeout(autojump_clock):
    calls: list[str] = []

    async def find(cid: str) -> list[str]:
        calls.append(cid)
        if cid == "slow":
            await trio.sleep_forever()
        await trio.sleep(0.1)
        return [f"holder-of-{cid}"]

    lookups = ProviderLookups(find, LookupConfig(timeout_s=2.0))
    ended: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        async def task(name: str, cids: list[str]) -> None:
            await lookups.resolve(nursery, cids)
            ended[name] = trio.current_time()

        nursery.start_soon(task, "reads-slow", ["slow", "fast"])
        nursery.start_soon(task, "reads-fast", ["fast"])
        nursery.start_soon(task, "reads-fast-too", ["fast"])
    assert ended["reads-fast"] < 0.5 and ended["reads-fast-too"] < 0.5
    assert 2.0 <= ended["reads-slow"] < 2.5
    assert calls.count("fast") == 1 and calls.count("slow") == 1          # one lookup per CID
    assert lookups.known("fast") == ("holder-of-fast",) and lookups.known("slow") == ()   # cached, nobody
    assert lookups.stats["timed_out"] == 1 and lookups.stats["waits_cut"] == 1
    await lookups.resolve(nursery, ["fast"])                            # cached: no second lookup
    assert calls.count("fast") == 1 and lookups.unknown(["fast", "other"]) == ["other"]


async def test_at_most_max_inflight_lookups_run_at_once_and_a_failing_one_gives_no_hint(autojump_clock):
    running, most = 0, 0

    async def find(cid: str) -> list[str]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await trio.sleep(0.3)
            if cid == "c3":
                raise ValueError("the DHT is not running")
            return ["p"]
        finally:
            running -= 1

    lookups = ProviderLookups(find, LookupConfig(max_inflight=3, timeout_s=10.0))
    async with trio.open_nursery() as nursery:
        await lookups.resolve(nursery, [f"c{i}" for i in range(12)])
    assert most == 3
    assert trio.current_time() >= 1.2                                    # 12 lookups, 3 at a time
    assert lookups.known("c3") == () and lookups.known("c4") == ("p",)
    assert lookups.stats["failed"] == 1 and lookups.stats["found"] == 11


async def test_the_service_places_a_task_whose_lookup_hangs_after_the_timeout_and_the_others_at_once(autojump_clock):
    from p2pcompute.scheduler.events import Dispatch
    from p2pcompute.scheduler.model import Requirements
    from p2pcompute.scheduler.service import SchedulerService

    async def find(cid: str) -> list[str]:
        if cid == "hangs":
            await trio.sleep_forever()
        return ["peer-b"]

    svc = SchedulerService()
    svc._note("made-here", "peer-c")                    # a holder known already: no lookup
    svc.lookups = ProviderLookups(find, LookupConfig(timeout_s=2.0))

    def dispatch(task: str, cid: str) -> Dispatch:
        return Dispatch("j", task, 2, Requirements(), (("x", cid, 10),))

    queued: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        svc._nursery = nursery

        async def watch() -> None:
            while len(queued) < 3:
                for d in svc._dispatches:
                    queued.setdefault(d.task, trio.current_time())
                await trio.sleep(0.01)

        nursery.start_soon(watch)
        for task, cid in (("slow", "hangs"), ("known", "made-here"), ("looked-up", "added-on-b")):
            svc._to_place(dispatch(task, cid))
    assert queued["known"] < 0.05 and queued["looked-up"] < 0.05
    assert 2.0 <= queued["slow"] < 2.1
    assert svc._hints(svc._dispatches) == {"made-here": ("peer-c",), "added-on-b": ("peer-b",)}


async def test_a_cid_nobody_serves_is_probed_once_however_many_tasks_ask_and_the_verdict_is_cached(autojump_clock):
    probes: list[str] = []

    async def probe(cid: str) -> str:
        probes.append(cid)
        await trio.sleep(1.0)
        return "" if cid == "held" else f"nobody has {cid}"

    lookups = ProviderLookups(lambda cid: trio.sleep(0, result=[]), LookupConfig(absent_ttl_s=30.0))
    answers: dict[tuple[str, int], str] = {}
    async with trio.open_nursery() as nursery:
        async def ask(cid: str, n: int) -> None:
            answers[cid, n] = await lookups.absent(cid, probe)

        for n in range(5):
            nursery.start_soon(ask, "gone", n)
            nursery.start_soon(ask, "held", n)
    assert probes.count("gone") == 1 and probes.count("held") == 1         # one probe per CID at a time
    assert {answers["gone", n] for n in range(5)} == {"nobody has gone"}
    assert {answers["held", n] for n in range(5)} == {""}
    assert await lookups.absent("gone", probe) == "nobody has gone" and probes.count("gone") == 1   # cached
    assert await lookups.absent("held", probe) == "" and probes.count("held") == 2   # "held" is not cached
    await trio.sleep(31.0)
    assert await lookups.absent("gone", probe) == "nobody has gone" and probes.count("gone") == 2   # expired

    async def broken(cid: str) -> str:
        raise ValueError("no bitswap")

    assert await lookups.absent("other", broken) == ""                   # no verdict: the executors decide
    assert lookups.stats["probes"] == 5 and lookups.stats["absent"] == 2


async def test_nobody_lists_only_the_cids_whose_lookup_found_no_provider(autojump_clock):
    async def find(cid: str) -> list[str]:
        return ["p"] if cid == "found" else []

    lookups = ProviderLookups(find)
    async with trio.open_nursery() as nursery:
        await lookups.resolve(nursery, ["found", "empty"])
    assert lookups.nobody(["found", "empty", "never-asked", "empty"]) == ["empty"]
