"""Running a daemon: data dir, lock, logging, libp2p node, control API, signals.

``run_daemon(config)`` is what ``p2pcompute join`` calls. It holds an
exclusive lock on ``<data dir>/daemon.lock`` (two daemons on one data dir
would fight over its files), writes ``api`` and a fresh ``api_token``, runs
the node and the control API in one nursery, and on SIGINT/SIGTERM cancels
them, says goodbye to peers, closes libp2p and removes ``api`` and
``api_token``. A second signal during that exits at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ..errors import DaemonNotRunning, UserError
from .api import API_FILE, TOKEN_FILE, ControlApi, create_token, serve_api
from .config import Config, write_default_file
from .identity import KEY_FILE, Identity
from .libp2p_transport import Libp2pTransport, quiet_libp2p_logging, split_p2p_addr
from .messages import Resources
from .node import Node

log = logging.getLogger(__name__)
LOCK_FILE = "daemon.lock"


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    quiet_libp2p_logging(logging.DEBUG if level.lower() == "debug" else logging.CRITICAL)
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    logging.getLogger("p2pcompute.api.http").setLevel(logging.WARNING)  # its "CTRL + C to quit" misleads


class DataDirLock:
    """An exclusive flock on the data dir, released when the process exits."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fh: Any = None

    def __enter__(self) -> DataDirLock:
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            pid = self._fh.read().strip() or "?"
            self._fh.close()
            raise UserError(
                f"another daemon (pid {pid}) is running with data dir {self.path.parent}; "
                "stop it, or give this one its own --data-dir"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()


def running_pid(data_dir: Path) -> int | None:
    """The pid of the daemon holding ``data_dir``'s lock, or None when none runs (0: pid not written yet)."""
    try:
        fh = open(data_dir / LOCK_FILE)
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else 0
        return None  # nobody holds it; closing releases our shared lock


def _process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def stop_daemon(data_dir: Path, *, timeout: float = 30.0, force: bool = False) -> int:
    """Stop the daemon of ``data_dir`` (SIGTERM) and wait until it has exited; its pid.

    ``force``: when it is still running after ``timeout``, a second SIGTERM
    (the daemon exits at once), then SIGKILL.
    """
    pid = running_pid(data_dir)
    if pid is None:
        raise DaemonNotRunning(f"no daemon is running for data dir {data_dir}")
    if pid == 0:
        raise UserError(f"the daemon of {data_dir} is still starting; try again in a moment")

    def send(signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise UserError(f"the daemon of {data_dir} (pid {pid}) belongs to another user; "
                            "run `p2pcompute stop` as that user") from None

    def exited(within: float) -> bool:
        deadline = time.monotonic() + within
        while _process_alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    send(signal.SIGTERM)
    if exited(timeout):
        return pid
    if not force:
        raise UserError(f"the daemon of {data_dir} (pid {pid}) did not stop within {timeout:g} s; "
                        "`p2pcompute stop --force` ends it at once")
    send(signal.SIGTERM)  # a second signal: it exits without its clean shutdown
    if not exited(10.0):
        send(signal.SIGKILL)
        if not exited(10.0):
            raise UserError(f"the daemon of {data_dir} (pid {pid}) does not exit, even on SIGKILL")
    return pid


def default_services(config: Config) -> list:
    """The protocols a daemon runs, in start order (a service may use those before it)."""
    from ..dashboard.service import DashboardService
    from ..dht.service import DhtConfig, DhtService
    from ..gossip.service import MembershipService
    from ..ops.service import ComputeService
    from ..scheduler.service import SchedulerService
    from ..storage.bitswap_service import BitswapService
    from ..storage.registry_service import RegistryService
    from ..storage.service import StorageService

    return [MembershipService(), DhtService(DhtConfig(protocols=tuple(config.dht_protocols))), StorageService(max_bytes=config.storage_max or None),
            BitswapService(), RegistryService(), ComputeService(cpus=max(1, int(config.cpus))), SchedulerService(),
            DashboardService()]


def advertised_host() -> str:
    """This machine's address as others would dial it, for URLs we hand out."""
    from .node import advertised

    hosts = [a.split("/")[2] for a in advertised(["/ip4/0.0.0.0/tcp/1"])]
    return next((h for h in hosts if h != "127.0.0.1"), "127.0.0.1")


def parse_bootstrap(addrs: list[str]) -> list[tuple]:
    out = []
    for a in addrs:
        peer, transport_part = split_p2p_addr(a)
        out.append((peer, [transport_part]))
    return out


def prepare_data_dir(data_dir: Path) -> bool:
    """Make the data dir (mode 0700) or tighten an existing one to 0700; True when it was made now."""
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = data_dir.stat().st_mode & 0o777
    if mode & 0o077:
        try:
            os.chmod(data_dir, 0o700)
        except OSError as exc:
            raise UserError(f"data dir {data_dir} is open to other users (mode {mode:o}) and cannot be "
                            f"tightened: {exc.strerror or exc}; run `chmod 700 {data_dir}`") from None
        log.warning("data dir %s was open to other users (mode %o): set it to 700", data_dir, mode)
    write_default_file(data_dir)
    return created


async def run_daemon(config: Config, *, on_ready: Callable[[dict], None] | None = None,
                     on_notice: Callable[[str, str], None] | None = None, parent: int | None = None) -> None:
    """Run a peer until SIGINT/SIGTERM. ``on_ready(status)`` once it serves.

    A first signal starts a clean shutdown; a second one during it exits at
    once, saying so. A daemon that fails before it serves leaves no new
    identity behind (nor the data dir, when this run made it). ``parent``: a
    pid whose exit stops the daemon as a signal would (devnet's peers do not
    outlive a devnet that was killed).
    """
    data_dir = config.data_dir
    made_dir = prepare_data_dir(data_dir)
    ready: list[bool] = []  # [True] once it serves
    with DataDirLock(data_dir):
        new_identity = not (data_dir / KEY_FILE).exists()
        api_path, token_path = data_dir / API_FILE, data_dir / TOKEN_FILE
        try:
            async with trio.open_nursery() as outer:
                shutdown = trio.CancelScope()
                await outer.start(_watch_signals, shutdown, (api_path, token_path))
                if parent is not None:
                    outer.start_soon(_watch_parent, shutdown, parent)
                with shutdown:
                    await _serve(config, ready, on_ready, on_notice)
                outer.cancel_scope.cancel()
        finally:
            api_path.unlink(missing_ok=True)
            token_path.unlink(missing_ok=True)
            if ready:
                log.info("daemon stopped")
            else:
                _forget_failed_start(data_dir, made_dir, new_identity)


async def _serve(config: Config, ready: list[bool], on_ready: Callable[[dict], None] | None,
                 on_notice: Callable[[str, str], None] | None) -> None:
    """The node and its APIs until cancelled; appends True to ``ready`` once they serve."""
    data_dir = config.data_dir
    identity = Identity.load_or_create(data_dir)
    bootstrap = parse_bootstrap(config.bootstrap)
    transport = Libp2pTransport(
        identity, config.listen, dial_timeout=config.dial_timeout,
        max_connections=config.max_connections, max_message=config.max_message,
        announce=config.announce, no_announce=config.no_announce,
        max_connections_per_ip=config.max_connections_per_ip,
        default_timeout=config.request_timeout,
    )
    resources = Resources(config.cpus, config.memory, dict(config.labels))
    node = Node(transport, resources=resources, data_dir=data_dir, bootstrap=bootstrap,
                target_peers=config.target_peers, on_notice=on_notice, services=default_services(config))
    token = create_token(data_dir)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        url = await nursery.start(serve_api, ControlApi(node, token, config=config), config.api_host,
                                  config.api_port)
        staged = data_dir / (API_FILE + ".tmp")  # written whole, then renamed: a client never reads it half-written
        staged.write_text(url + "\n")
        os.replace(staged, data_dir / API_FILE)
        status = node.status() | {"api": url}
        if config.links_listen:
            host, port = config.links_listen.rsplit(":", 1)
            links = await nursery.start(serve_api, ControlApi(node, token, public_only=True), host, int(port))
            node.public_url = links.replace("0.0.0.0", advertised_host())
            status["links"] = node.public_url
        log.info("peer %s ready, API at %s", node.peer_id, url)
        ready.append(True)
        if on_ready:
            on_ready(status)


def _forget_failed_start(data_dir: Path, made_dir: bool, new_identity: bool) -> None:
    """A join that never served leaves nothing new: the dir it made, or the identity it made."""
    if made_dir:
        shutil.rmtree(data_dir, ignore_errors=True)
    elif new_identity:
        (data_dir / KEY_FILE).unlink(missing_ok=True)


async def _watch_parent(shutdown: trio.CancelScope, parent: int) -> None:
    """Cancel ``shutdown`` once ``parent`` is no longer our parent (it exited, even by SIGKILL)."""
    while os.getppid() == parent:
        await trio.sleep(1.0)
    log.info("parent process %d is gone, shutting down", parent)
    shutdown.cancel()


async def _watch_signals(shutdown: trio.CancelScope, files: tuple[Path, ...],
                         exit: Callable[[int], Any] = os._exit, *,
                         task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """First SIGINT/SIGTERM: cancel ``shutdown`` (a clean stop). Second: remove ``files``, ``exit`` now.

    Start it with ``nursery.start``: it is started once the signals are caught.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not shutdown.cancel_called:
                log.info("received %s, shutting down (send it again to exit at once)", name)
                shutdown.cancel()
                continue
            log.warning("received %s again: exiting now, without saying goodbye to peers", name)
            for path in files:
                with contextlib.suppress(OSError):
                    path.unlink()
            logging.shutdown()
            exit(128 + signum)
