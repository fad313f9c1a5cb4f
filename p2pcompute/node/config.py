"""Daemon configuration: defaults < config.toml < P2PCOMPUTE_* env vars < flags.

The data dir (``--data-dir``, else ``P2PCOMPUTE_HOME``, else ``~/.p2pcompute``)
holds everything a peer keeps: ``identity.key``, ``config.toml``,
``peers.json`` (known peers, to rejoin after a restart), and while the daemon
runs ``api`` (its control API URL), ``api_token`` and ``daemon.lock``.

``Config.load`` records where every value came from, so ``p2pcompute config
show`` can say why a setting is what it is.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENV_PREFIX = "P2PCOMPUTE_"
CONFIG_FILE = "config.toml"


def default_data_dir() -> Path:
    env = os.environ.get(ENV_PREFIX + "HOME")
    return Path(env).expanduser() if env else Path.home() / ".p2pcompute"


def default_cpus() -> float:
    return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def default_memory() -> int:
    """Half of physical memory: a volunteer keeps the rest for themselves."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError):
        return 1 << 30


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str | int) -> int:
    """``4GiB``, ``512MB``, ``1073741824`` -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"{text!r} is not a size; write e.g. 4GiB, 512MB or a number of bytes")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def parse_labels(items: list[str] | str | dict) -> dict[str, str]:
    """``["zone=eu", "gpu=none"]`` or ``"zone=eu,gpu=none"`` -> dict."""
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    if isinstance(items, str):
        items = [i for i in items.split(",") if i.strip()]
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"label {item!r} must look like key=value")
        labels[key.strip()] = value.strip()
    return labels


def _split_list(value: str | list) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in value.split(",") if v.strip()]


@dataclass
class Config:
    """Everything a daemon needs; each field documented for ``config show``."""

    data_dir: Path = field(default_factory=default_data_dir)
    listen: list[str] = field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/4040"])
    bootstrap: list[str] = field(default_factory=list)
    announce: list[str] = field(default_factory=list)
    no_announce: list[str] = field(default_factory=list)
    api_host: str = "127.0.0.1"
    api_port: int = 0  # 0: any free port, written to <data dir>/api
    cpus: float = field(default_factory=default_cpus)
    memory: int = field(default_factory=default_memory)
    labels: dict[str, str] = field(default_factory=dict)
    log_level: str = "info"
    max_connections: int = 512
    max_connections_per_ip: int = 16
    target_peers: int = 32
    request_timeout: float = 10.0
    dial_timeout: float = 5.0
    max_message: int = 1 << 20
    storage_max: int = 0  # bytes; 0: no limit
    links_listen: str = ""  # host:port serving signed data links to others; "": only on the control API
    sources: dict[str, str] = field(default_factory=dict, repr=False)

    HELP = {
        "listen": "multiaddrs to listen on (comma-separated in env)",
        "bootstrap": "multiaddrs of peers to join through, each ending in /p2p/<peer ID>",
        "announce": "multiaddrs to tell peers instead of the listen and interface addresses (as kubo's Announce)",
        "no_announce": "multiaddrs or networks (/ip4/10.0.0.0/ipcidr/8) never to tell peers (as kubo's NoAnnounce)",
        "api_host": "address of the local control API (keep it on loopback)",
        "api_port": "port of the control API; 0 picks a free one",
        "cpus": "CPUs offered to the network",
        "memory": "memory offered to the network (e.g. 4GiB)",
        "labels": "key=value labels for placement (comma-separated in env)",
        "log_level": "debug, info, warning or error",
        "max_connections": "most open connections",
        "max_connections_per_ip": "most connections from one IP address other than loopback",
        "target_peers": "how many peers to keep connections to",
        "request_timeout": "seconds to wait for a reply",
        "dial_timeout": "seconds to wait for a connection",
        "max_message": "largest message accepted, in bytes",
        "storage_max": "most bytes the blockstore may hold (e.g. 100GiB); 0: no limit",
        "links_listen": "host:port where others fetch signed data links (e.g. 0.0.0.0:8480); empty: loopback API only",
    }

    @classmethod
    def load(cls, data_dir: Path | None = None, flags: dict[str, Any] | None = None,
             env: dict[str, str] | None = None) -> Config:
        """Build the config in force: defaults, then the file, env, flags."""
        env = dict(os.environ) if env is None else env
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        cfg = cls()
        if data_dir is not None:
            cfg.data_dir = Path(data_dir).expanduser()
            cfg.sources["data_dir"] = "flag"
        elif ENV_PREFIX + "HOME" in env:
            cfg.data_dir = Path(env[ENV_PREFIX + "HOME"]).expanduser()
            cfg.sources["data_dir"] = "env"
        path = cfg.data_dir / CONFIG_FILE
        if path.exists():
            try:
                values = tomllib.loads(path.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path} is not valid TOML: {exc}") from None
            cfg._apply(values, str(path))
        env_values = {name: env[ENV_PREFIX + name.upper()] for name in cls.HELP if ENV_PREFIX + name.upper() in env}
        cfg._apply(env_values, "env")
        cfg._apply(flags, "flag")
        cfg._check()
        return cfg

    def _apply(self, values: dict[str, Any], source: str) -> None:
        known = {f.name: f for f in fields(self)} 
        for name, value in values.items():
            if name not in self.HELP:
                raise ConfigError(f"unknown setting {name!r} in {source}; known: {', '.join(self.HELP)}")
            try:
                setattr(self, name, self._convert(name, value, known[name].type))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"bad value {value!r} for {name} in {source}: {exc}") from None
            self.sources[name] = source

    @staticmethod
    def _convert(name: str, value: Any, type_name: str) -> Any:
        if name in ("memory", "storage_max"):
            return parse_size(value)
        if name == "labels":
            return parse_labels(value)
        if type_name == "list[str]":
            return _split_list(value)
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
        return str(value)

    def _check(self) -> None:
        if self.cpus <= 0:
            raise ConfigError("cpus must be positive")
        if not 0 <= self.api_port <= 65535:
            raise ConfigError(f"api_port {self.api_port} is not a port number")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level {self.log_level!r}: use debug, info, warning or error")
        if not self.listen:
            raise ConfigError("listen is empty: give at least one multiaddr")
        if self.max_connections_per_ip < 1:
            raise ConfigError("max_connections_per_ip must be at least 1")
        if self.links_listen and not re.fullmatch(r"[^:\s]+:[0-9]{1,5}", self.links_listen):
            raise ConfigError(f"links_listen {self.links_listen!r}: write host:port, e.g. 0.0.0.0:8480")

    def describe(self) -> dict[str, Any]:
        """Values and their sources, for ``config show``."""
        out = {}
        for name, value in asdict(self).items():
            if name == "sources":
                continue
            out[name] = {"value": str(value) if isinstance(value, Path) else value,
                         "source": self.sources.get(name, "default")}
        return out


DEFAULT_FILE_TEXT = """\
# p2pcompute daemon configuration. Environment variables P2PCOMPUTE_<NAME>
# override these, and flags override both. `p2pcompute config show` prints
# the settings in force and where each came from.

# listen = ["/ip4/0.0.0.0/tcp/4040"]
# bootstrap = ["/ip4/192.0.2.1/tcp/4040/p2p/12D3KooW..."]
# announce = ["/ip4/203.0.113.7/tcp/4040"]   # tell peers these instead (e.g. behind port forwarding)
# no_announce = ["/ip4/10.0.0.0/ipcidr/8"]   # never tell peers these
# api_port = 0            # 0: a free port, written to <data dir>/api
# cpus = 2
# memory = "4GiB"
# labels = { zone = "home" }
# log_level = "info"
# storage_max = "100GiB"  # the blockstore's limit; 0: none
# links_listen = "0.0.0.0:8480"  # serve signed data links (`data sign`) to others
"""


def write_default_file(data_dir: Path) -> None:
    path = data_dir / CONFIG_FILE
    if not path.exists():
        path.write_text(DEFAULT_FILE_TEXT)
