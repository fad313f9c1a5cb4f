"""Daemons on different addresses, as on different hosts, on one machine: network namespaces.

Layout of one ``Net`` (every name starts with ``p2pn-<pid>-<k>``, pid of the
test process, k a counter):

    namespace  p2pn-<pid>-<k>-h   the harness: bridge br0; for daemon i the
                                  host end v<i> of its veth pair, and (for
                                  delay) taps d<i> and b<i>
    namespace  p2pn-<pid>-<k>-<i> daemon i: lo and eth0 = 10.77.0.<i+1>/24

Nothing else exists: no default route anywhere, no address in the harness
namespace, nothing in the machine's own namespace. A daemon can reach its own
loopback and the other daemons, and nothing else.

Faults are tc filters on the ingress of v<i> (the frames daemon i sends), so
the daemons' namespaces stay untouched:
    partition  classic BPF: drop IPv4 to the other side's addresses
    loss       classic BPF: drop with probability p (``ld rand``); the daemon's
               eth0 sends one frame per skb meanwhile (gso_max_segs 1), so
               that a drop strikes one frame, not a 64 KiB GSO burst
    delay      mirred redirect into tap d<i>; ``netns_delay.py`` (in the
               harness namespace) writes each frame into tap b<i> on the
               bridge DELAY ms later
These need only ``CONFIG_NET_CLS_BPF``, ``CONFIG_NET_ACT_MIRRED`` and TUN,
not ``sch_netem``, which many kernels (this project's CI machines among them)
are built without. Delay and loss apply to what a daemon sends: with 50 ms on
every daemon a round trip between two of them takes 100 ms.

Daemons are real ``p2pcompute join`` processes started with ``ip netns exec``.
Their control API listens on 127.0.0.1 inside their namespace; ``Net.api``
reaches it with a socket opened from a short-lived thread that has entered
that namespace (``setns`` changes only the calling thread). CLI commands run
in the namespace with ``Net.cli``.

``Net.close()`` stops every process and deletes every namespace (which
deletes the veths, taps and bridge in them); ``cleanup_leftovers()`` does the
same for namespaces of earlier test processes that no longer run.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

FAMILY = "p2pn"
SUBNET = "10.77.0"
PORT = 4001
CLONE_NEWNET = 0x40000000
DELAY_SCRIPT = Path(__file__).with_name("netns_delay.py")
CLI = [sys.executable, "-m", "p2pcompute"]

_counter = 0
_open_nets: list[Net] = []
_probe_result: list[str | None] = []


class NetnsError(RuntimeError):
    pass


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise NetnsError(f"{' '.join(args)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def unavailable_reason() -> str | None:
    """Why network-namespace tests cannot run here, or None if they can (probed once per process)."""
    if not _probe_result:
        _probe_result.append(_probe())
    return _probe_result[0]


def _probe() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "needs root to create network namespaces, veths and tc filters (CI runs as root)"
    for tool in ("ip", "tc", "bridge"):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing: install iproute2"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (needed for the delay taps)"
    ns = f"{FAMILY}-{os.getpid()}-probe"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        sh("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", ns, "tuntap", "add", "dev", "d0", "mode", "tap")
        sh("tc", "-n", ns, "qdisc", "add", "dev", "v0", "clsact")
        sh("tc", "-n", ns, "filter", "add", "dev", "v0", "ingress", "prio", "1", "bpf", "da",
           "bytecode", _loss_bytecode(0.5))
        sh("tc", "-n", ns, "filter", "add", "dev", "v0", "ingress", "prio", "2", "u32", "match", "u32", "0", "0",
           "action", "mirred", "egress", "redirect", "dev", "d0")
    except (NetnsError, OSError, subprocess.TimeoutExpired) as exc:
        return f"this kernel or sandbox does not allow the namespace set-up: {exc}"
    finally:
        sh("ip", "netns", "del", ns, check=False)
    return None


def cleanup_leftovers() -> list[str]:
    """Delete namespaces of this family left by test processes that no longer run; return their names."""
    removed = []
    for name in _netns_names():
        m = re.match(rf"{FAMILY}-(\d+)-", name)
        if not m or _alive(int(m.group(1))):
            continue
        _kill_ns_processes(name)
        sh("ip", "netns", "del", name, check=False)
        removed.append(name)
    return removed


def _netns_names() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(FAMILY + "-")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_ns_processes(ns: str) -> None:
    """SIGKILL what still runs in a namespace of ours (daemons' workers, a crashed run's daemons)."""
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _loss_bytecode(p: float) -> str:
    """Classic BPF for cls_bpf direct-action: drop (TC_ACT_SHOT) with probability p, else continue."""
    threshold = min(int(p * 2**32), 2**32 - 1)
    # ld rand; jge #threshold -> continue; ret SHOT; ret UNSPEC
    return f"4,32 0 0 {2**32 - 0x1000 + 56},53 1 0 {threshold},6 0 0 2,6 0 0 {2**32 - 1}"


def _partition_bytecode(blocked: list[str]) -> str:
    """Classic BPF: drop IPv4 frames whose destination is in ``blocked``, let the rest continue."""
    k = len(blocked)
    ops = ["40 0 0 12", f"21 0 {k + 1} 2048", "32 0 0 30"]  # ldh [12]; jeq IPv4; ld [30] (dst)
    for j, addr in enumerate(blocked):
        ops.append(f"21 {k - j} 0 {int.from_bytes(socket.inet_aton(addr), 'big')}")
    ops += [f"6 0 0 {2**32 - 1}", "6 0 0 2"]  # ret UNSPEC (continue); ret SHOT
    return f"{len(ops)}," + ",".join(ops)


def _socket_in(ns: str, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made from inside namespace ``ns`` (by a thread that enters it and ends)."""
    box: dict = {}

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["sock"] = socket.create_connection((host, port), timeout)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    t = threading.Thread(target=work, name=f"netns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


@dataclass
class Daemon:
    index: int
    ns: str
    address: str
    data_dir: Path
    process: subprocess.Popen | None = None
    peer_id: str = ""
    stopped: bool = False  # SIGSTOPped by a test

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def multiaddr(self) -> str:
        return f"/ip4/{self.address}/tcp/{PORT}/p2p/{self.peer_id}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Net:
    """``n`` daemon namespaces on one bridge; see the module doc. Use as a context manager."""

    root: Path
    n: int
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        global _counter
        _counter += 1
        self.tag = f"{FAMILY}-{os.getpid()}-{_counter}"
        self.hub = f"{self.tag}-h"
        self._delay: subprocess.Popen | None = None
        self._closed = False

    # --- set-up and tear-down -------------------------------------------------

    def __enter__(self) -> Net:
        _open_nets.append(self)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(self) -> None:
        hub = self.hub
        sh("ip", "netns", "add", hub)
        sh("ip", "-n", hub, "link", "set", "lo", "up")
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        for i in range(self.n):
            ns = f"{self.tag}-{i}"
            d = Daemon(i, ns, f"{SUBNET}.{i + 1}", self.root / f"peer{i}")
            self.daemons.append(d)
            sh("ip", "netns", "add", ns)
            sh("ip", "netns", "exec", ns, "sh", "-c",
               "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", hub, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{d.address}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", hub, "link", "set", f"v{i}", "master", "br0", "up")
            mac = json.loads(sh("ip", "-n", ns, "-j", "link", "show", "eth0").stdout)[0]["address"]
            # frames to daemon i go to v<i> even while its own frames reach the bridge through tap b<i>
            sh("bridge", "-n", hub, "fdb", "add", mac, "dev", f"v{i}", "master", "static")
            sh("tc", "-n", hub, "qdisc", "add", "dev", f"v{i}", "clsact")
            for tap in (f"d{i}", f"b{i}"):
                sh("ip", "-n", hub, "tuntap", "add", "dev", tap, "mode", "tap")
                sh("ip", "-n", hub, "link", "set", tap, "up")
            sh("ip", "-n", hub, "link", "set", f"b{i}", "master", "br0")
            sh("bridge", "-n", hub, "link", "set", "dev", f"b{i}", "learning", "off", "flood", "off",
               "mcast_flood", "off")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for d in self.daemons:
                if d.running() and d.stopped:
                    d.process.send_signal(signal.SIGCONT)
            for d in self.daemons:
                if d.running():
                    d.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for d in self.daemons:
                if d.process is None:
                    continue
                try:
                    d.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    d.process.kill()
                    d.process.wait()
            self._stop_delay()
        finally:
            for ns in [d.ns for d in self.daemons] + [self.hub]:
                _kill_ns_processes(ns)
                sh("ip", "netns", "del", ns, check=False)
            if self in _open_nets:
                _open_nets.remove(self)

    # --- daemons --------------------------------------------------------------

    def start(self, indices: Iterable[int] | None = None, extra: Iterable[str] = (), *, any_address: bool = False,
              timeout: float = 90) -> None:
        """Start daemons (all by default): the first one alone, then the rest bootstrapping to daemon 0.

        Each listens on its own address, or with ``any_address`` on 0.0.0.0 (as a user on a LAN would).
        """
        todo = list(range(self.n) if indices is None else indices)
        deadline = time.monotonic() + timeout
        if 0 in todo and not self.daemons[0].running():
            self._spawn(self.daemons[0], None, extra, any_address)
            self.wait_serving(self.daemons[0], deadline)
            todo.remove(0)
        boot = self.daemons[0].multiaddr
        for i in todo:
            self._spawn(self.daemons[i], boot, extra, any_address)
        for i in todo:
            self.wait_serving(self.daemons[i], deadline)

    def _spawn(self, d: Daemon, bootstrap: str | None, extra: Iterable[str], any_address: bool) -> None:
        d.data_dir.mkdir(parents=True, exist_ok=True)
        (d.data_dir / "api").unlink(missing_ok=True)
        cmd = ["ip", "netns", "exec", d.ns, *CLI, "join", "--data-dir", str(d.data_dir),
               "--listen", f"/ip4/{'0.0.0.0' if any_address else d.address}/tcp/{PORT}", "--api-port", "0", "--cpus", "1",
               "--log-level", "info", "--label", f"netns={d.index}", *extra]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        with open(d.log_path, "ab") as log:
            d.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        d.stopped = False

    def wait_serving(self, d: Daemon, deadline: float) -> dict:
        while time.monotonic() < deadline:
            if not d.running():
                raise NetnsError(f"daemon {d.index} exited ({d.process.returncode}):\n{d.log_tail()}")
            if (d.data_dir / "api").exists():
                try:
                    status = self.api(d.index, "GET", "/v1/status", timeout=10)
                    d.peer_id = status["peer_id"]
                    return status
                except (OSError, NetnsError, http.client.HTTPException):
                    pass
            time.sleep(0.2)
        raise NetnsError(f"daemon {d.index} did not serve in time:\n{d.log_tail()}")

    def signal(self, i: int, sig: int) -> None:
        d = self.daemons[i]
        d.process.send_signal(sig)
        if sig == signal.SIGSTOP:
            d.stopped = True
        elif sig == signal.SIGCONT:
            d.stopped = False
        elif sig == signal.SIGKILL:
            d.process.wait()

    # --- talking to daemons ---------------------------------------------------

    def api(self, i: int, method: str, path: str, body: dict | None = None, timeout: float = 10) -> dict:
        """One control-API call to daemon ``i`` from inside its namespace; JSON answer."""
        d = self.daemons[i]
        url = (d.data_dir / "api").read_text().strip()
        m = re.match(r"http://([\d.]+):(\d+)", url)
        if not m:
            raise NetnsError(f"daemon {i}: unexpected api file {url!r}")
        token = (d.data_dir / "api_token").read_text().strip()
        conn = http.client.HTTPConnection(m.group(1), int(m.group(2)), timeout=timeout)
        conn.sock = _socket_in(d.ns, m.group(1), int(m.group(2)), timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise NetnsError(f"daemon {i}: {method} {path}: {resp.status} {data[:300]!r}")
        return json.loads(data)

    def members(self, i: int) -> dict[str, str]:
        """Daemon i's membership view: peer ID -> state."""
        return {m["peer_id"]: m["state"] for m in self.api(i, "GET", "/v1/members")["members"]}

    def tcp_congestion_control(self, i: int = 0) -> str:
        """The TCP congestion control daemon i's namespace uses (loss-based ones crawl under random loss)."""
        return sh("ip", "netns", "exec", self.daemons[i].ns, "cat", "/proc/sys/net/ipv4/tcp_congestion_control").stdout.strip()

    def cli(self, i: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``p2pcompute ARGS --data-dir <daemon i's>`` run inside daemon i's namespace."""
        d = self.daemons[i]
        return subprocess.run(["ip", "netns", "exec", d.ns, *CLI, *args, "--data-dir", str(d.data_dir)],
                              capture_output=True, timeout=timeout)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float, poll: float = 0.25) -> float:
        """Seconds until ``check()`` held; AssertionError naming ``what`` (with daemon logs) on timeout."""
        start = time.monotonic()
        while True:
            try:
                if check():
                    return time.monotonic() - start
            except (OSError, NetnsError, http.client.HTTPException):
                pass  # a daemon busy or restarting: ask again
            if time.monotonic() - start > timeout:
                raise AssertionError(f"not within {timeout:.0f} s: {what}\n{self.report()}")
            time.sleep(poll)

    def sees(self, watcher: int, target: int, states: tuple[str, ...]) -> bool:
        return self.members(watcher).get(self.daemons[target].peer_id) in states

    def all_see(self, watchers: Iterable[int], targets: Iterable[int], states: tuple[str, ...]) -> bool:
        targets = list(targets)
        for w in watchers:
            view = self.members(w)
            if any(view.get(self.daemons[t].peer_id) not in states for t in targets if t != w):
                return False
        return True

    def report(self) -> str:
        lines = []
        for d in self.daemons:
            try:
                view = {self._name(p): s for p, s in self.members(d.index).items()} if d.running() and not d.stopped else "-"
            except (OSError, NetnsError, http.client.HTTPException) as exc:
                view = f"({exc})"
            lines.append(f"daemon {d.index} {d.address} running={d.running()} stopped={d.stopped} view={view}")
            if not d.running() and d.process is not None:
                lines.append(d.log_tail(10))
        return "\n".join(lines)

    def _name(self, peer_id: str) -> str:
        return next((f"d{d.index}" for d in self.daemons if d.peer_id == peer_id), peer_id[:12])

    # --- faults ---------------------------------------------------------------

    def partition(self, *groups: Iterable[int]) -> None:
        """Cut the network into ``groups``: no IPv4 crosses between two of them (either way)."""
        groups = [set(g) for g in groups]
        for g in groups:
            blocked = [d.address for d in self.daemons if d.index not in g]
            for i in g:
                sh("tc", "-n", self.hub, "filter", "replace", "dev", f"v{i}", "ingress", "prio", "10",
                   "handle", "1", "bpf", "da", "bytecode", _partition_bytecode(blocked))

    def heal(self) -> None:
        for i in range(self.n):
            sh("tc", "-n", self.hub, "filter", "del", "dev", f"v{i}", "ingress", "prio", "10", check=False)

    def impair(self, *, loss: float = 0.0, delay_ms: float = 0.0, only: Iterable[int] | None = None) -> None:
        """What each daemon (or those in ``only``) sends is lost with probability ``loss`` and delayed ``delay_ms``."""
        self.clear_impairment()
        who = list(range(self.n) if only is None else only)
        for i in who:
            if loss > 0:
                # one frame per skb, so that loss strikes frames as on a wire, not whole 64 KiB GSO bursts
                sh("ip", "-n", self.daemons[i].ns, "link", "set", "eth0", "gso_max_segs", "1")
                sh("tc", "-n", self.hub, "filter", "replace", "dev", f"v{i}", "ingress", "prio", "20",
                   "handle", "1", "bpf", "da", "bytecode", _loss_bytecode(loss))
        if delay_ms > 0:
            self._delay = subprocess.Popen(
                ["ip", "netns", "exec", self.hub, sys.executable, str(DELAY_SCRIPT), str(delay_ms),
                 *[f"d{i}:b{i}" for i in who]],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            line = self._delay.stdout.readline()
            if line.strip() != b"ready":
                self._delay.kill()
                raise NetnsError(f"delay forwarder failed: {line!r} {self._delay.stderr.read()!r}")
            for i in who:
                sh("tc", "-n", self.hub, "filter", "replace", "dev", f"v{i}", "ingress", "prio", "30",
                   "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", f"d{i}")

    def clear_impairment(self) -> None:
        for i in range(self.n):
            sh("ip", "-n", self.daemons[i].ns, "link", "set", "eth0", "gso_max_segs", "65535", check=False)
            for prio in ("20", "30"):
                sh("tc", "-n", self.hub, "filter", "del", "dev", f"v{i}", "ingress", "prio", prio, check=False)
        self._stop_delay()

    def _stop_delay(self) -> None:
        if self._delay is not None and self._delay.poll() is None:
            self._delay.terminate()
            try:
                self._delay.wait(5)
            except subprocess.TimeoutExpired:
                self._delay.kill()
                self._delay.wait()
        self._delay = None


def close_all() -> None:
    """Close every Net still open (an interrupted run); registered with atexit by the fixture module."""
    for net in list(_open_nets):
        net.close()
