"""A real daemon under hostile gossip, poisoned records and a links flood: its RSS, CPU, an honest peer's round trips.

The victim is a ``p2pcompute join`` daemon in its own process on loopback,
serving signed data links on a public listener (``links_listen``). Beside it,
in this process, an honest peer (a Node running membership) joins it and
sends it a node Ping every 50 ms, and the control API's ``/v1/status`` is
asked every 200 ms. An attacker, a third process, in turn (issue 9):

1. ``forged``: ``Update(victim, alive|dead, 2^63-1)`` and the other
   end-of-range incarnations, 20 times a second, straight to the victim and
   through a third peer (the honest one, which gossips on to the victim);
2. ``fakes``: 50,000 made-up "alive" members gossiped by one peer;
3. ``poison``: signed Hellos with memory = 10**5000, cpus = 10**400 or NaN
   and 1000 labels, capability records in gossip with NaN cpus and
   memory = 10**5000, and a poisoned peer-exchange reply; then the bench
   checks that ``/v1/peers`` answers 200 with clean JSON and none of them;
4. ``links``: 24 concurrent requests to the links listener, each trying to
   send a 64 MiB body (to a valid link, to a forged one, with a length or
   chunked), and ``token=x.y`` requests: first paced (the 24 once a second,
   20 tokens a second), then as an unpaced flood (each again as soon as it
   is answered); then the bench fetches a valid link.

Each attack is followed by an idle phase, to show what the daemon keeps.
Prints one JSON object per phase (victim RSS MiB and peak, CPU % of one core,
the honest Ping's and /v1/status's median and p90 round trip, whether the
daemon is alive and serving, tracebacks in its log, the attacker's counts),
then a table and whether every median stayed within 2x of the unloaded one
(the median over the idle phases, so one noisy phase on a shared machine does not set it).
About 90 s.

    python bench/bench_gossip_hostile.py [--seconds 10] [--after 6]   (GOSSIP_LOG=FILE keeps the daemon's log)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hostile import (fake_member_gossip, fake_members, forged_incarnations, poisoned_capability,  # noqa: E402
                     poisoned_claim, poisoned_others, serve_poisoned_exchange)
from p2pcompute.errors import RemoteError  # noqa: E402
from p2pcompute.gossip.messages import Gossip  # noqa: E402
from p2pcompute.gossip.service import MembershipService  # noqa: E402
from p2pcompute.node.identity import Identity  # noqa: E402
from p2pcompute.node.libp2p_transport import Libp2pTransport, quiet_libp2p_logging, split_p2p_addr  # noqa: E402
from p2pcompute.node.messages import Hello, Resources  # noqa: E402
from p2pcompute.node.node import Node  # noqa: E402

CLI = [sys.executable, "-m", "p2pcompute"]
BODY = 64 << 20  # what each links request tries to send
LINK_REQUESTS = 24


# --- the attacker process ---------------------------------------------------------------------------------


async def attacker(kind: str, args: argparse.Namespace) -> dict:
    counts: dict = {"sent": 0, "errors": 0}
    if kind == "links":
        await links_flood(args, counts)
        return counts
    t = Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=5.0)
    others, bad = poisoned_others()
    served = serve_poisoned_exchange(t, bad) if kind == "poison" else []
    end = trio.current_time() + args.seconds
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        victim = await t.connect(args.victim)

        async def send(peer, msg) -> None:
            try:
                await t.send(peer, msg)
                counts["sent"] += 1
            except Exception:
                counts["errors"] += 1

        if kind == "forged":  # straight to the victim, and through a third peer
            relay = await t.connect(args.relay)
            updates = forged_incarnations(victim)
            while trio.current_time() < end:
                for target in (victim, relay):
                    for update in updates:
                        await send(target, Gossip(updates=(update,)))
                await trio.sleep(0.05)
        elif kind == "fakes":
            fakes = fake_members(50_000)
            start = trio.current_time()
            for gossip in fake_member_gossip(fakes):
                await send(victim, gossip)
            counts["members_gossiped"] = len(fakes)
            counts["seconds_to_send"] = round(trio.current_time() - start, 2)
        elif kind == "poison":
            counts["hellos_refused"] = 0
            hellos = [poisoned_claim(t.identity, memory=10**5000), *bad]
            caps = Gossip(capabilities=(poisoned_capability(t.identity, cpus=float("nan")),
                                        poisoned_capability(t.identity, memory=10**5000),
                                        poisoned_capability(others[0], cpus=float("inf"), load=float("nan"))))
            while trio.current_time() < end:
                for claim in hellos:
                    try:
                        await t.request(victim, Hello(claim), timeout=5)
                        counts["sent"] += 1
                    except RemoteError:
                        counts["hellos_refused"] += 1  # refused, as it should be
                    except Exception:
                        counts["errors"] += 1
                await send(victim, caps)
                await trio.sleep(0.2)
            counts["get_peers_served"] = len(served)
            counts["poisoned_ids"] = [str(o.peer_id) for o in others]
        await trio.sleep_until(end)
        nursery.cancel_scope.cancel()
    return counts


async def links_flood(args: argparse.Namespace, counts: dict) -> None:
    """24 requests at once, each trying to send a 64 MiB body; and token=x.y requests. ``--pace paced``:
    the 24 start together once a second and the token requests come 20 a second; ``flood``: each as soon as
    the last one was answered."""
    paced = args.pace == "paced"
    host, port = args.links.removeprefix("http://").rstrip("/").rsplit(":", 1)
    end = trio.current_time() + args.seconds
    counts.update(answers={}, token_answers={}, max_mib_written=0.0)
    chunk = b"x" * (1 << 20)

    def tally(key: str, status: str) -> None:
        counts[key][status] = counts[key].get(status, 0) + 1

    async def one(i: int) -> None:
        path = args.link if i % 2 else "/data/link?token=forged.token"
        size = f"Content-Length: {BODY}" if i % 4 < 2 else "Transfer-Encoding: chunked"
        while trio.current_time() < end:
            if paced:
                await trio.sleep_until(math.ceil(trio.current_time()))
            written = 0
            try:
                stream = await trio.open_tcp_stream(host, int(port))
            except OSError:
                tally("answers", "refused")
                await trio.sleep(0.05)
                continue
            async with stream:
                await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{size}\r\n\r\n".encode())
                answer = bytearray()
                async with trio.open_nursery() as inner:
                    async def write() -> None:
                        nonlocal written
                        framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if "chunked" in size else chunk
                        try:
                            while written < BODY:
                                await stream.send_all(framed)
                                written += len(chunk)
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass
                    inner.start_soon(write)
                    try:
                        with trio.move_on_after(30):
                            while b"\r\n" not in answer:
                                data = await stream.receive_some(65536)
                                if not data:
                                    break
                                answer += data
                    except (trio.BrokenResourceError, OSError):
                        pass
                    inner.cancel_scope.cancel()
            line = bytes(answer).split(b"\r\n", 1)[0].split()
            tally("answers", line[1].decode() if len(line) > 1 else "no answer")
            counts["sent"] += 1
            counts["max_mib_written"] = max(counts["max_mib_written"], round(written / 2**20, 1))

    async def tokens(client: httpx.AsyncClient) -> None:
        while trio.current_time() < end:
            try:
                r = await client.get(f"http://{host}:{port}/data/link", params={"token": "x.y"})
                tally("token_answers", str(r.status_code))
            except httpx.HTTPError:
                tally("token_answers", "error")
            if paced:
                await trio.sleep(0.05)

    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        for i in range(LINK_REQUESTS):
            nursery.start_soon(one, i)
        nursery.start_soon(tokens, client)


# --- the victim, the honest peer and the measurements --------------------------------------------------------


def start_victim(tmp: Path) -> tuple[subprocess.Popen, dict, Path]:
    data_dir, log = tmp / "victim", tmp / "victim.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), P2PCOMPUTE_LINKS_LISTEN="127.0.0.1:0")
    proc = subprocess.Popen(CLI + ["join", "--data-dir", str(data_dir), "--listen", "/ip4/127.0.0.1/tcp/0", "--cpus",
                                   "1", "--memory", "1GiB", "--json"], stdout=subprocess.PIPE,
                            stderr=open(log, "w"), env=env, text=True)
    text = "".join(iter(proc.stdout.readline, "}\n"))
    if proc.poll() is not None or not text:
        raise SystemExit(f"the victim did not start:\n{log.read_text()}")
    status = json.loads(text + "}")
    status["token"] = (data_dir / "api_token").read_text().strip()
    status["data_dir"] = str(data_dir)
    return proc, status, log


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else math.nan


class Watch:
    """The honest peer's Ping and /v1/status round trips, the victim's RSS peak, over the current phase."""

    def __init__(self, honest: Node, victim, api: httpx.AsyncClient, proc: psutil.Process) -> None:
        self.honest, self.victim, self.api, self.proc = honest, victim, api, proc
        self.warnings = WarningCount()
        logging.getLogger().addHandler(self.warnings)
        self.reset()

    def reset(self) -> None:
        self.pings: list[float] = []
        self.statuses: list[float] = []
        self.ping_failures = self.status_failures = 0
        self.peak = self.rss()

    def rss(self) -> float:
        try:
            return self.proc.memory_info().rss / 2**20
        except psutil.Error:
            return math.nan

    async def ping_loop(self) -> None:
        while True:
            try:
                self.pings.append(await self.honest.ping(self.victim, timeout=10))
            except Exception:
                self.ping_failures += 1
            await trio.sleep(0.05)

    async def status_loop(self) -> None:
        while True:
            start = trio.current_time()
            try:
                (await self.api.get("/v1/status")).raise_for_status()
                self.statuses.append(trio.current_time() - start)
            except httpx.HTTPError:
                self.status_failures += 1
            await trio.sleep(0.2)

    async def rss_loop(self) -> None:
        while True:
            self.peak = max(self.peak, self.rss())
            await trio.sleep(0.2)


class WarningCount(logging.Handler):
    """Counts the honest peer's warnings (one a bad frame, by the forged attack) instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


def honest_sees(honest: Node, victim) -> str:
    return {r["peer_id"]: r["state"] for r in honest.services["membership"].member_rows()}.get(str(victim), "unknown")


async def run_phase(name: str, watch: Watch, seconds: float, victim_proc: subprocess.Popen, log: Path,
                    attack: list[str] | None = None) -> dict:
    watch.reset()
    proc = watch.proc
    cpu0, t0, log0 = proc.cpu_times(), time.monotonic(), log.stat().st_size
    counts = None
    if attack is None:
        await trio.sleep(seconds)
    else:  # its own process: its CPU is not the honest peer's
        result = await trio.run_process([sys.executable, __file__, "--seconds", str(seconds), *attack],
                                        capture_stdout=True, check=False)
        lines = result.stdout.decode().strip().splitlines()
        counts = json.loads(lines[-1]) if result.returncode == 0 and lines else {"attacker_exit": result.returncode}
    alive = victim_proc.poll() is None
    try:
        cpu1 = proc.cpu_times()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (time.monotonic() - t0) * 100
    except psutil.Error:
        cpu = math.nan
    status, members = {}, {}
    try:
        r = await watch.api.get("/v1/status")
        status = r.json() if r.status_code == 200 else {}
        m = await watch.api.get("/v1/members")
        members = {row["peer_id"]: row["state"] for row in m.json()["members"]} if m.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        pass
    new_log = log.read_bytes()[log0:].decode(errors="replace")
    membership = status.get("membership", {})
    row = {
        "phase": name, "seconds": round(time.monotonic() - t0, 1),
        "rss_mib": round(watch.rss(), 1), "rss_peak_mib": round(watch.peak, 1), "cpu_pct": round(cpu, 1),
        "ping_median_ms": round(statistics.median(watch.pings) * 1e3, 2) if watch.pings else None,
        "ping_p90_ms": round(percentile(watch.pings, 0.9) * 1e3, 2) if watch.pings else None,
        "pings": len(watch.pings), "ping_failures": watch.ping_failures,
        "status_median_ms": round(statistics.median(watch.statuses) * 1e3, 2) if watch.statuses else None,
        "status_p90_ms": round(percentile(watch.statuses, 0.9) * 1e3, 2) if watch.statuses else None,
        "status_failures": watch.status_failures,
        "alive": alive, "serving": bool(status),
        "victim_sees_honest": members.get(str(watch.honest.peer_id), "unknown"),
        "honest_sees_victim": honest_sees(watch.honest, watch.victim),
        "incarnation": membership.get("incarnation"), "members": membership.get("members"),
        "refused": {k: v for k, v in membership.get("refused", {}).items() if v},
        "membership_errors": membership.get("errors"),
        "tracebacks": tracebacks(new_log), "log_kib": round(len(new_log) / 1024, 1),
        "log_lines": new_log.count("\n"), "honest_warnings": watch.warnings.take(),
        "load1": round(os.getloadavg()[0], 2),
    }
    if counts is not None:
        row["attack"] = counts
    return row


def tracebacks(log: str) -> int:
    """Tracebacks logged (an exception group's inner ones not counted again)."""
    return sum(1 for line in log.splitlines() if line.strip().startswith(("Traceback", "+ Exception Group Traceback")))


async def check_peers(api: httpx.AsyncClient, poisoned_ids: list[str]) -> dict:
    """/v1/peers after the poison: its status, whether its JSON is clean (no NaN/Infinity), poisoned peers in it."""
    r = await api.get("/v1/peers")
    clean, listed = True, []
    if r.status_code == 200:
        def refuse(constant):
            nonlocal clean
            clean = False
        body = json.loads(r.text, parse_constant=refuse)
        listed = [row["peer_id"] for row in body["peers"] if row["peer_id"] in poisoned_ids]
    return {"peers_status": r.status_code, "peers_json_clean": clean, "poisoned_peers_listed": len(listed)}


async def main(args: argparse.Namespace) -> None:
    quiet_libp2p_logging(50)
    tmp = Path(tempfile.mkdtemp(prefix="gossip-hostile-"))
    victim_proc, status, log = start_victim(tmp)
    rows = []
    try:
        address = next(a for a in status["addresses"] if "/127.0.0.1/" in a)
        victim, where = split_p2p_addr(address)
        (tmp / "f.bin").write_bytes(os.urandom(1 << 20))
        headers = {"Authorization": f"Bearer {status['token']}"}
        async with httpx.AsyncClient(base_url=status["api"], headers=headers, timeout=30) as api:
            added = subprocess.run(CLI + ["add", str(tmp / "f.bin"), "--json", "--data-dir", status["data_dir"]],
                                   capture_output=True, text=True, check=True)
            link = (await api.post("/data/sign", json={"cid": json.loads(added.stdout)["cid"], "ttl": 3600})).json()
            honest = Node(Libp2pTransport(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"], dial_timeout=5.0),
                          resources=Resources(1.0, 1 << 30), bootstrap=[(victim, [where])], rng=random.Random(1),
                          target_peers=4, services=[MembershipService(rng=random.Random(2))])
            watch = Watch(honest, victim, api, psutil.Process(victim_proc.pid))
            async with trio.open_nursery() as nursery:
                await nursery.start(honest.run)
                relay = f"{honest.transport.listen_addresses()[0].split('/p2p/')[0]}/p2p/{honest.peer_id}"
                with trio.fail_after(60):
                    while honest_sees(honest, victim) != "alive":
                        await trio.sleep(0.1)
                for loop in (watch.ping_loop, watch.status_loop, watch.rss_loop):
                    nursery.start_soon(loop)
                await trio.sleep(1.0)
                links = ["--links", status["links"], "--link", link["path"]]
                phases = [("unloaded", None),
                          ("forged incarnation", ["--attack", "forged", "--victim", address, "--relay", relay]),
                          ("after forged", None),
                          ("50,000 fake members", ["--attack", "fakes", "--victim", address]),
                          ("after fakes", None),
                          ("poisoned records", ["--attack", "poison", "--victim", address]),
                          ("after poison", None),
                          ("links: 24 x 64 MiB/s, token=x.y", ["--attack", "links", "--pace", "paced", *links]),
                          ("after links", None),
                          ("links: same, unpaced flood", ["--attack", "links", "--pace", "flood", *links]),
                          ("after links flood", None)]
                for name, attack in phases:
                    row = await run_phase(name, watch, args.seconds if attack else args.after, victim_proc, log,
                                          attack)
                    if name == "poisoned records":
                        row["check"] = await check_peers(api, row.get("attack", {}).get("poisoned_ids", []))
                        row.get("attack", {}).pop("poisoned_ids", None)
                    if name.startswith("links"):
                        good = await api.get(status["links"] + link["path"], headers={"Authorization": ""})
                        row["check"] = {"valid_link_after": good.status_code, "link_bytes": len(good.content)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                nursery.cancel_scope.cancel()
    finally:
        victim_proc.terminate()
        try:
            victim_proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            victim_proc.kill()
        if os.environ.get("GOSSIP_LOG"):
            shutil.copy(log, os.environ["GOSSIP_LOG"])
        shutil.rmtree(tmp, ignore_errors=True)
    table(rows)


def table(rows: list[dict]) -> None:
    def ms(v):
        return "   -" if v is None else f"{v:7.2f}"

    print(f"\n{'phase':34} {'RSS MiB':>7} {'peak':>6} {'CPU %':>6} {'Ping med':>8} {'p90':>7} {'status med':>10}"
          f" {'p90':>7} {'alive':>5} {'tb':>3} {'log lines':>9} {'load':>5}")
    for r in rows:
        print(f"{r['phase']:34} {r['rss_mib']:7.1f} {r['rss_peak_mib']:6.1f} {r['cpu_pct']:6.1f} "
              f"{ms(r['ping_median_ms']):>8} {ms(r['ping_p90_ms']):>7} {ms(r['status_median_ms']):>10} "
              f"{ms(r['status_p90_ms']):>7} {'yes' if r['alive'] and r['serving'] else 'NO':>5} {r['tracebacks']:3d}"
              f" {r['log_lines']:9d} {r['load1']:5.2f}")
    print("Ping: the honest peer's node Ping to the victim (ms); status: GET /v1/status on its control API (ms);"
          " tb: tracebacks in its log; load: the machine's 1-minute load average")
    idle = [r for r in rows if r["phase"] == "unloaded" or r["phase"].startswith("after")]
    ref = {key: statistics.median(r[key] for r in idle if r[key] is not None)
           for key in ("ping_median_ms", "status_median_ms")}  # the unloaded figure, robust to one noisy phase
    slow = sorted({r["phase"] for r in rows[1:] for key in ref if r[key] is None or r[key] > 2 * ref[key]})
    print(f"unloaded (median of the idle phases): Ping {ref['ping_median_ms']:.2f} ms, status "
          f"{ref['status_median_ms']:.2f} ms; every honest median within 2x of it:",
          "yes" if not slow else f"NO ({', '.join(slow)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each attack")
    parser.add_argument("--after", type=float, default=6.0, help="length of each idle phase")
    for hidden in ("--attack", "--victim", "--relay", "--links", "--link", "--pace"):  # the attacker process's
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        quiet_libp2p_logging(50)
        print(json.dumps(trio.run(attacker, args.attack, args)), flush=True)
    else:
        trio.run(main, args)
