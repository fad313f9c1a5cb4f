"""Running a daemon: data dir, lock, logging, libp2p node, control API, signals.

``run_daemon(config)`` is what ``p2pcompute join`` calls. It holds an
exclusive lock on ``<data dir>/daemon.lock`` (two daemons on one data dir
would fight over its files), writes ``api`` and ``api_token``, runs the node
and the control API in one nursery, and on SIGINT/SIGTERM cancels them,
says goodbye to peers, closes libp2p and removes ``api``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from ..errors import UserError
from .api import API_FILE, ControlApi, load_or_create_token, serve_api
from .config import Config, write_default_file
from .identity import Identity
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


def default_services(config: Config) -> list:
    """The protocols a daemon runs, in start order (a service may use those before it)."""
    from ..dht.service import DhtConfig, DhtService
    from ..gossip.service import MembershipService
    from ..ops.service import ComputeService
    from ..storage.bitswap_service import BitswapService
    from ..storage.registry_service import RegistryService
    from ..storage.service import StorageService

    return [MembershipService(), DhtService(DhtConfig()), StorageService(max_bytes=config.storage_max or None),
            BitswapService(), RegistryService(), ComputeService(cpus=max(1, int(config.cpus)))]


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


def prepare_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_default_file(data_dir)


async def run_daemon(config: Config, *, on_ready: Callable[[dict], None] | None = None,
                     on_notice: Callable[[str, str], None] | None = None) -> None:
    """Run a peer until SIGINT/SIGTERM. ``on_ready(status)`` once it serves."""
    data_dir = config.data_dir
    prepare_data_dir(data_dir)
    with DataDirLock(data_dir):
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
        token = load_or_create_token(data_dir)
        api_path = data_dir / API_FILE
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signals, nursery.cancel_scope)
                await nursery.start(node.run)
                url = await nursery.start(serve_api, ControlApi(node, token), config.api_host, config.api_port)
                api_path.write_text(url + "\n")
                status = node.status() | {"api": url}
                if config.links_listen:
                    host, port = config.links_listen.rsplit(":", 1)
                    links = await nursery.start(serve_api, ControlApi(node, token, public_only=True), host, int(port))
                    node.public_url = links.replace("0.0.0.0", advertised_host())
                    status["links"] = node.public_url
                log.info("peer %s ready, API at %s", node.peer_id, url)
                if on_ready:
                    on_ready(status)
        finally:
            api_path.unlink(missing_ok=True)
            log.info("daemon stopped")


async def _cancel_on_signals(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            scope.cancel()
            return
