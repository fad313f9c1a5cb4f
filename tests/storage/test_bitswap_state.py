"""The bitswap state machines, fed events directly: Engine alone, and Sessions against real Engines."""

import random
from collections import deque

from p2pcompute.storage import bitswap_pb as pb
from p2pcompute.storage.bitswap import (
    Engine, EngineConfig, Failed, Finished, Need, SendWants, Session, SessionConfig, Store,
)
from p2pcompute.storage.cid import RAW, Cid
from p2pcompute.storage.exporter import read_file
from p2pcompute.storage.importer import FileImporter

ME = "me"


def make_dag(data: bytes, chunk: int = 1024, links: int = 4):
    blocks = {}
    imp = FileImporter(lambda cid, b: blocks.__setitem__(cid, b), chunk_size=chunk, max_links=links)
    for i in range(0, len(data), chunk):
        imp.add_chunk(data[i:i + chunk])
    return imp.finish().cid, blocks


def raw_cid(data: bytes) -> Cid:
    return Cid.of(data, RAW, 1)


# --- Engine ------------------------------------------------------------------------------


def engine_with(blocks, **config):
    return Engine(lambda cid: len(blocks[cid]) if cid in blocks else None, EngineConfig(**config))


def test_engine_answers_have_dont_have_and_blocks():
    small, big, missing = b"s" * 10, b"b" * 5000, b"nope"
    blocks = {raw_cid(small): small, raw_cid(big): big}
    eng = engine_with(blocks)
    wants = (pb.WantEntry(raw_cid(big), want_type=pb.WANT_HAVE, send_dont_have=True),
             pb.WantEntry(raw_cid(small), want_type=pb.WANT_HAVE),  # tiny: the block itself
             pb.WantEntry(raw_cid(missing), want_type=pb.WANT_BLOCK, send_dont_have=True),
             pb.WantEntry(raw_cid(b"quiet"), want_type=pb.WANT_HAVE, send_dont_have=False))
    assert eng.receive("p", pb.Message(wants)) == ["p"]
    batch = eng.next_batch("p")
    assert batch.haves == (raw_cid(big),)
    assert batch.dont_haves == (raw_cid(missing),)
    assert batch.blocks == (raw_cid(small),)
    assert eng.next_batch("p") is None
    # what we lacked is remembered and served once it arrives
    assert set(eng.wantlist("p")) == {raw_cid(missing), raw_cid(b"quiet")}
    blocks[raw_cid(missing)] = missing
    assert eng.block_added(raw_cid(missing)) == ["p"]
    assert eng.next_batch("p").blocks == (raw_cid(missing),)
    # want-block upgrades a queued HAVE
    eng.receive("p", pb.Message((pb.WantEntry(raw_cid(big), want_type=pb.WANT_HAVE),)))
    eng.receive("p", pb.Message((pb.WantEntry(raw_cid(big)),)))
    batch = eng.next_batch("p")
    assert batch.blocks == (raw_cid(big),) and batch.haves == ()
    # a cancel withdraws a want we could not serve yet
    eng.receive("p", pb.Message((pb.WantEntry(raw_cid(b"quiet"), cancel=True),)))
    assert eng.wantlist("p") == []


def test_engine_cancel_full_and_budget():
    data = {raw_cid(bytes([i]) * 400_000): bytes([i]) * 400_000 for i in range(5)}
    eng = engine_with(data, batch_bytes=1_000_000)
    cids = list(data)
    eng.receive("p", pb.Message(tuple(pb.WantEntry(c) for c in cids)))
    eng.receive("p", pb.Message((pb.WantEntry(cids[1], cancel=True),)))
    first = eng.next_batch("p")
    assert first.blocks == (cids[0], cids[2])  # 800 kB; a third would pass the 1 MB budget
    assert eng.next_batch("p").blocks == (cids[3], cids[4])
    # a full wantlist replaces what was there
    eng.receive("p", pb.Message(tuple(pb.WantEntry(c) for c in cids[:3])))
    eng.receive("p", pb.Message((pb.WantEntry(cids[4]),), full=True))
    assert eng.next_batch("p").blocks == (cids[4],)
    assert eng.next_batch("p") is None
    # a single block over the budget still goes
    eng2 = engine_with(data, batch_bytes=10)
    eng2.receive("q", pb.Message((pb.WantEntry(cids[0]),)))
    assert eng2.next_batch("q").blocks == (cids[0],)


def test_engine_is_bounded_and_forgets_gone_peers():
    eng = engine_with({}, max_wants_per_peer=3, max_peers=2)
    wanted = [raw_cid(b"%d" % i) for i in range(10)]
    eng.receive("p", pb.Message(tuple(pb.WantEntry(c) for c in wanted)))
    assert eng.wantlist("p") == wanted[-3:]  # the oldest were forgotten
    eng.receive("q", pb.Message((pb.WantEntry(wanted[0]),)))
    assert eng.receive("r", pb.Message((pb.WantEntry(wanted[0], send_dont_have=True),))) == []
    assert set(eng.ledgers) == {"p", "q"}
    eng.peer_gone("p")
    assert eng.wantlist("p") == [] and eng.block_added(wanted[-1]) == []


# --- Session against real engines -----------------------------------------------------------


class Net:
    """Pure simulation: a Session and provider Engines exchanging messages, with virtual time."""

    def __init__(self, root, providers, *, corrupt=(), silent=(), local=None, seed=1, hook=None, present=None,
                 **config):
        self.providers = providers  # peer -> {cid: bytes}
        self.engines = {p: engine_with(store) for p, store in providers.items()}
        self.corrupt, self.silent, self.gone = set(corrupt), set(silent), set()
        self.local = dict(local or {})
        self.now = 0.0
        self.session = Session(root, self.now, random.Random(seed), SessionConfig(**config))
        self.queue = deque()
        self.served = {p: 0 for p in providers}
        self.stored_from = {}
        self.max_wanted = 0
        self.result = None
        self.log = []
        self.on_block = hook  # hook(net, peer) before each block is delivered
        for p in providers if present is None else present:
            self.feed(self.session.add_peer(p, self.now))
        self.feed(self.session.start(self.now))

    def feed(self, cmds):
        self.queue.extend(cmds)
        while self.queue:
            cmd = self.queue.popleft()
            if isinstance(cmd, tuple):  # a message arriving, in FIFO order after what was sent before
                self.arrive(cmd)
                continue
            self.log.append(cmd)
            if isinstance(cmd, Need):
                self.queue.extendleft(reversed(self.session.resolved(cmd.cid, self.local.get(cmd.cid), self.now)))
            elif isinstance(cmd, Store):
                assert cmd.cid.matches(cmd.data)
                self.local[cmd.cid] = cmd.data
                self.stored_from[cmd.cid] = cmd.peer
            elif isinstance(cmd, SendWants):
                self.deliver_wants(cmd.peer, cmd.entries)
            elif isinstance(cmd, (Finished, Failed)):
                self.result = cmd
            self.max_wanted = max(self.max_wanted, len(self.session._wants))

    def deliver_wants(self, peer, entries):
        if peer in self.gone:
            return
        eng = self.engines[peer]
        eng.receive(ME, pb.Message(entries))
        while (batch := eng.next_batch(ME)) is not None:
            for cid in batch.blocks:
                if peer in self.silent:
                    continue
                data = self.providers[peer][cid]
                if peer in self.corrupt:
                    data = b"\xff" + data[1:]
                self.served[peer] += 1
                self.queue.append(("block", peer, pb.Block.of(cid, data)))
            for cid in batch.haves:
                self.queue.append(("presence", peer, cid, True))
            for cid in batch.dont_haves:
                self.queue.append(("presence", peer, cid, False))

    def arrive(self, e):
        if e[1] in self.gone:
            return
        if e[0] == "block":
            _, peer, block = e
            if self.on_block:
                self.on_block(self, peer)
            if peer in self.gone:
                return
            cid = block.cid()  # the driver hashes every block
            if self.session.wants(cid) or self.session.seen(cid):
                cmds = self.session.on_block(peer, cid, block.data, self.now)
            else:
                cmds = self.session.peer_misbehaved(peer, self.now, "unsolicited")
        else:
            _, peer, cid, have = e
            cmds = self.session.on_presence(peer, cid, have, self.now)
        self.queue.extendleft(reversed(cmds))  # the driver carries them out at once

    def run(self, max_steps=1000):
        for _ in range(max_steps):
            if self.result is not None:
                return self.result
            deadline = self.session.next_deadline()
            assert deadline is not None
            self.now = max(self.now, deadline)
            self.feed(self.session.tick(self.now))
        raise AssertionError("session did not finish")


DATA = random.Random(7).randbytes(200 * 1024 + 77)


def test_fetch_from_one_provider_rebuilds_the_file():
    root, blocks = make_dag(DATA)
    net = Net(root, {"a": blocks})
    assert isinstance(net.run(), Finished)
    assert read_file(net.local.__getitem__, root) == DATA
    assert net.served["a"] == len(blocks) and net.now == 0.0  # no timer was needed


def test_wants_are_split_across_three_providers_within_the_bounds():
    root, blocks = make_dag(DATA)
    net = Net(root, {p: blocks for p in "abc"}, window=16, per_peer=4)
    assert isinstance(net.run(), Finished)
    assert read_file(net.local.__getitem__, root) == DATA
    assert all(net.served[p] > len(blocks) // 6 for p in "abc"), net.served
    assert sum(net.served.values()) <= len(blocks) + 2  # only the tiny root went out from each (inline)
    assert net.max_wanted <= 16


def test_corrupted_blocks_are_rejected_and_fetched_elsewhere():
    root, blocks = make_dag(DATA)
    net = Net(root, {"bad": blocks, "good": blocks}, corrupt={"bad"})
    assert isinstance(net.run(), Finished)
    assert read_file(net.local.__getitem__, root) == DATA
    assert "bad" in net.session.dropped and net.served["bad"] >= 1
    assert all(peer == "good" for peer in net.stored_from.values())


def test_a_provider_vanishing_mid_transfer_does_not_fail_the_fetch():
    root, blocks = make_dag(DATA)

    def vanish(net, peer):
        if peer == "a" and net.served["a"] >= 20 and "a" not in net.gone:
            net.gone.add("a")  # its queued blocks are lost with it
            net.queue.extendleft(reversed(net.session.remove_peer("a", net.now)))

    net = Net(root, {"a": blocks, "b": blocks}, seed=3, hook=vanish)
    assert isinstance(net.run(), Finished)
    assert "a" in net.gone and read_file(net.local.__getitem__, root) == DATA
    assert net.served["b"] >= len(blocks) - net.served["a"]
    assert "a" not in net.session.peers and "a" not in net.session.dropped  # gone, not blamed


def test_a_silent_provider_is_struck_and_its_wants_move():
    root, blocks = make_dag(DATA)

    def hang(net, peer):  # "mute" serves a few blocks, then hangs (keeps its connection, sends nothing)
        if net.served["mute"] >= 5:
            net.silent.add("mute")

    net = Net(root, {"mute": blocks, "ok": blocks}, hook=hang, stall_timeout=2.0, max_strikes=2)
    assert isinstance(net.run(), Finished)
    assert read_file(net.local.__getitem__, root) == DATA
    assert "mute" in net.session.dropped
    assert 2.0 <= net.now < 10.0


def test_dont_have_sends_the_want_to_the_peer_that_has_it():
    root, blocks = make_dag(DATA)
    net = Net(root, {"empty": {}, "full": blocks})
    assert isinstance(net.run(), Finished)
    assert net.served == {"empty": 0, "full": len(blocks)}
    wants_to_empty = [e for c in net.log if isinstance(c, SendWants) and c.peer == "empty" for e in c.entries]
    assert wants_to_empty and all(e.want_type == pb.WANT_HAVE for e in wants_to_empty if not e.cancel)


def test_nobody_has_it_rebroadcasts_then_fails():
    root, _ = make_dag(DATA)
    net = Net(root, {"x": {}, "y": {}}, rebroadcast=1.0, idle_timeout=5.0)
    result = net.run()
    assert isinstance(result, Failed) and "no block arrived" in result.reason
    haves = [c for c in net.log if isinstance(c, SendWants) and c.peer == "x"]
    assert len(haves) >= 4  # asked again every second
    assert net.session.next_deadline() is None


def test_local_blocks_are_not_fetched_and_repeated_leaves_once():
    root, blocks = make_dag(DATA)
    some = dict(list(blocks.items())[: len(blocks) // 2])
    net = Net(root, {"a": blocks}, local=some)
    assert isinstance(net.run(), Finished)
    assert net.served["a"] == len(blocks) - len(some)
    zeros_root, zero_blocks = make_dag(bytes(64 * 1024))  # 64 identical leaves
    net = Net(zeros_root, {"a": zero_blocks})
    assert isinstance(net.run(), Finished) and net.served["a"] == len(zero_blocks)


def test_a_provider_that_appears_later_is_used():
    root, blocks = make_dag(DATA)
    net = Net(root, {"late": blocks}, present=())
    net.feed(net.session.tick(0.5))
    assert net.result is None
    net.feed(net.session.add_peer("late", 1.0))
    assert isinstance(net.run(), Finished)


def test_same_seed_same_commands():
    root, blocks = make_dag(DATA)
    logs = []
    for _ in range(2):
        net = Net(root, {p: blocks for p in "abc"}, seed=42, window=8, per_peer=2)
        net.run()
        logs.append([repr(c) for c in net.log if not isinstance(c, Store)])
    assert logs[0] == logs[1]


# --- Engine bounds (a hostile peer cannot make it hold or do unbounded work) -----------------------


def absent(n, start=0):
    return tuple(pb.WantEntry(raw_cid(b"absent%d" % i), want_type=pb.WANT_HAVE, send_dont_have=True)
                 for i in range(start, start + n))


def test_engine_drops_a_peer_whose_reply_queue_overflows_and_bans_it_for_a_while():
    eng = engine_with({}, max_queue=100, ban_seconds=60)
    assert eng.receive("p", pb.Message(absent(100)), now=0) == ["p"]
    assert eng.take_drops() == []
    assert eng.receive("p", pb.Message(absent(1, 100)), now=1) == []  # the 101st reply it did not read
    (peer, reason), = eng.take_drops()
    assert peer == "p" and "faster than it reads" in reason
    assert "p" not in eng.ledgers and eng._queued == 0 and not eng._wanted_by
    assert eng.receive("p", pb.Message(absent(5)), now=30) == [] and "p" not in eng.ledgers
    assert eng.receive("p", pb.Message(absent(5)), now=61) == ["p"]  # the ban is over
    assert eng.counts["peers_dropped"] == 1


def test_engine_queues_at_most_max_queue_total_replies_over_all_peers():
    eng = engine_with({}, max_queue=100, max_queue_total=150)
    eng.receive("p", pb.Message(absent(100)))
    eng.receive("q", pb.Message(absent(100, 100)))
    assert eng._queued == 150 and eng.counts["replies_refused"] == 50
    assert len(eng.next_batch("p").dont_haves) == 100 and eng._queued == 50
    eng.peer_gone("q")
    assert eng._queued == 0 and not eng.take_drops()


def test_engine_read_delay_spends_want_tokens_and_refills_them():
    eng = engine_with({}, want_rate=1000, want_burst=2000, max_queue=10**6)
    eng.receive("p", pb.Message(absent(2000)), now=0)
    assert eng.read_delay("p", 0) == 0
    eng.receive("p", pb.Message(absent(500, 2000)), now=0)
    assert abs(eng.read_delay("p", 0) - 0.5) < 1e-9  # 500 wants over the burst, at 1000/s
    assert abs(eng.read_delay("p", 0.2) - 0.3) < 1e-9
    assert eng.read_delay("p", 1.0) == 0
    assert eng.read_delay("stranger", 0) == 0


def test_engine_drops_a_peer_the_driver_cannot_write_to():
    eng = engine_with({}, ban_seconds=10)
    eng.receive("p", pb.Message(absent(3)), now=0)
    eng.send_failed("p", 5, "a write took over 20 s")
    assert eng.take_drops() == [("p", "a write took over 20 s")]
    assert eng.banned("p", 14) and not eng.banned("p", 15)
    assert eng._queued == 0
