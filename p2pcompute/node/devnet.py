"""A devnet: N real daemons as separate OS processes on loopback.

Peer 0 starts a network; the others bootstrap to it. Each has its own data
dir under the devnet dir, its log in ``<dir>/peerI/daemon.log``, a free TCP
port on 127.0.0.1 and a free control API port. ``Devnet`` starts them, waits
until they serve and see each other, and stops them (SIGTERM, then SIGKILL
after a grace period). Each peer also stops by itself when the devnet
process is gone (``--exit-with-parent``), even if it was SIGKILLed. One OS
process per peer because ~20–30 busy peers saturate one process's core.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DaemonNotRunning, P2PComputeError, UserError
from .client import ControlClient
from .config import API_FILE


@dataclass
class DevPeer:
    index: int
    data_dir: Path
    process: subprocess.Popen
    status: dict | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "daemon.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Devnet:
    def __init__(self, root: Path, n: int, *, log_level: str = "info", extra_args: list[str] = ()) -> None:
        if n < 1:
            raise UserError("a devnet needs at least 1 peer")
        self.root = Path(root)
        self.n = n
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.peers: list[DevPeer] = []

    def _spawn(self, index: int, bootstrap: str | None) -> DevPeer:
        data_dir = self.root / f"peer{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / API_FILE).unlink(missing_ok=True)  # a stale one from an earlier run
        cmd = [sys.executable, "-m", "p2pcompute", "join", "--data-dir", str(data_dir),
               "--listen", "/ip4/127.0.0.1/tcp/0", "--api-port", "0", "--log-level", self.log_level,
               "--label", f"devnet={index}", "--exit-with-parent", str(os.getpid()), *self.extra_args]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        log = open(data_dir / "daemon.log", "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
        log.close()
        peer = DevPeer(index, data_dir, proc)
        self.peers.append(peer)
        return peer

    def _wait_serving(self, peer: DevPeer, deadline: float) -> dict:
        while time.monotonic() < deadline:
            if peer.process.poll() is not None:
                raise P2PComputeError(f"peer {peer.index} exited with code {peer.process.returncode}:\n{peer.log_tail()}")
            try:
                client = ControlClient(peer.data_dir, timeout=5)
                try:
                    peer.status = client.status()
                    return peer.status
                finally:
                    client.close()
            except DaemonNotRunning:
                time.sleep(0.1)
        raise P2PComputeError(f"peer {peer.index} did not start in time:\n{peer.log_tail()}")

    def start(self, timeout: float = 60.0, progress: Callable[[int], None] = lambda i: None) -> None:
        deadline = time.monotonic() + timeout
        first = self._spawn(0, None)
        status = self._wait_serving(first, deadline)
        progress(0)
        bootstrap = next(a for a in status["addresses"] if "/127.0.0.1/" in a)
        for i in range(1, self.n):
            self._spawn(i, bootstrap)
        for peer in self.peers[1:]:
            self._wait_serving(peer, deadline)
            progress(peer.index)

    def wait_connected(self, timeout: float = 30.0) -> bool:
        """Wait until every peer is connected to every other and holds every other alive; False on timeout.

        Connections come first and membership news a moment later: a view
        taken between the two shows peers as merely "connected".
        """
        deadline = time.monotonic() + timeout
        want = min(self.n - 1, 32)
        while time.monotonic() < deadline:
            ready = True
            for peer in self.peers:
                client = ControlClient(peer.data_dir, timeout=5)
                try:
                    peer.status = client.status()
                    if peer.status["connected_peers"] < want:
                        ready = False
                    elif sum(row["state"] == "alive" for row in client.peers()) < self.n - 1:
                        ready = False
                finally:
                    client.close()
            if ready:
                return True
            time.sleep(0.2)
        return False

    def dead(self) -> list[DevPeer]:
        return [p for p in self.peers if p.process.poll() is not None]

    def kill(self) -> None:
        """SIGKILL every peer still running (a second Ctrl-C while stopping)."""
        for p in self.peers:
            if p.process.poll() is None:
                p.process.kill()

    def stop(self, grace: float = 8.0) -> None:
        for p in self.peers:
            if p.process.poll() is None:
                p.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.peers:
            try:
                p.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.process.kill()
                p.process.wait()
