"""Daemon configuration: defaults < config.toml < P2PCOMPUTE_* env vars < flags.

The data dir (``--data-dir``, else ``P2PCOMPUTE_HOME``, else ``~/.p2pcompute``)
holds everything a peer keeps: ``identity.key``, ``config.toml``,
``peers.json`` (known peers, to rejoin after a restart), and while the daemon
runs ``api`` (its control API URL), ``api_token`` and ``daemon.lock``.

``Config.load`` records where every value came from, so ``p2pcompute config
show`` can say why a setting is what it is.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

ENV_PREFIX = "P2PCOMPUTE_"
# ours, and kubo's LAN DHT (a user's own kubo is then a peer of the DHT); dht/driver.py names them too
DHT_PROTOCOLS = ("/p2pcompute/kad/1.0.0", "/ipfs/lan/kad/1.0.0")
CONFIG_FILE = "config.toml"
# written by a running daemon (api.py), read by its clients (client.py): defined here, where a command that only
# finds its daemon need not load the server's modules
API_FILE = "api"
TOKEN_FILE = "api_token"


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


def machine_memory() -> int:
    """Physical memory of this machine, in bytes (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


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
    from .messages import MAX_LABELS, check_texts  # the bounds peers check our record against
    if len(labels) > MAX_LABELS:
        raise ConfigError(f"at most {MAX_LABELS} labels (peers refuse records with more)")
    try:
        check_texts("labels", [*labels, *labels.values()], 2 * MAX_LABELS)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return labels


def _check_multiaddr(text: str) -> None:
    import multiaddr

    try:
        multiaddr.Multiaddr(text)
    except Exception as exc:  # the library raises several kinds
        reason = re.search(r"': (.*?)(?: \(string:|$)", str(exc))
        raise ConfigError(f"{text!r} is not a valid multiaddr ({reason.group(1) if reason else exc}); "
                          "write e.g. /ip4/0.0.0.0/tcp/4040") from None


def _short(value: Any) -> str:
    """A value as it appears in an error line: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _split_list(value: str | list) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in value.split(",") if v.strip()]


# list settings whose items must parse as multiaddrs
MULTIADDR_LISTS = ("listen", "bootstrap")


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
    dht_protocols: list[str] = field(default_factory=lambda: list(DHT_PROTOCOLS))
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
        "dht_protocols": "Kademlia protocols served and asked: ours and kubo's LAN DHT (comma-separated in env)",
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

    # name -> (lowest, highest) accepted; numbers outside are refused with the setting's name and source
    RANGES = {
        "api_port": (0, 65535),
        "cpus": (0.01, 1 << 20),
        "memory": (1, 1 << 60),
        "max_connections": (1, 1 << 20),
        "target_peers": (1, 1 << 16),
        "request_timeout": (0.01, 86400),
        "dial_timeout": (0.01, 3600),
        "max_message": (1024, 1 << 30),
        "storage_max": (0, 1 << 60),
    }

    def _apply(self, values: dict[str, Any], source: str) -> None:
        known = {f.name: f for f in fields(self)}
        for name, value in values.items():
            where = f"environment variable {ENV_PREFIX}{name.upper()}" if source == "env" else source
            if name not in self.HELP:
                raise ConfigError(f"unknown setting {name!r} in {where}; known: {', '.join(self.HELP)}")
            try:
                converted = self._convert(name, value, known[name].type)
            except ConfigError as exc:
                raise ConfigError(f"bad value {_short(value)} for {name} in {where}: {exc}") from None
            except (TypeError, ValueError, OverflowError) as exc:
                raise ConfigError(f"bad value {_short(value)} for {name} in {where}: {exc}") from None
            low, high = self.RANGES.get(name, (None, None))
            if low is not None and not low <= converted <= high:
                what = "not a port number (0-65535)" if name == "api_port" else f"out of range [{low:,}, {high:,}]"
                raise ConfigError(f"bad value {_short(value)} for {name} in {where}: {what}")
            setattr(self, name, converted)
            self.sources[name] = source

    @staticmethod
    def _convert(name: str, value: Any, type_name: str) -> Any:
        """``value`` (from TOML, an env var or a flag) as the setting's type; ConfigError says why not."""
        if isinstance(value, bool):
            raise ConfigError("true/false is not meaningful here")
        if name in ("memory", "storage_max"):
            if not isinstance(value, (int, str)):
                raise ConfigError("write a size such as 4GiB or a number of bytes")
            return parse_size(value)
        if name == "labels":
            if not isinstance(value, (list, str, dict)):
                raise ConfigError("write key=value labels, e.g. { zone = \"eu\" }")
            return parse_labels(value)
        if type_name == "list[str]":
            if not isinstance(value, (list, str)) or not all(isinstance(v, str) for v in value):
                raise ConfigError("write a list of strings, e.g. [\"/ip4/0.0.0.0/tcp/4040\"]")
            items = _split_list(value)
            if name in MULTIADDR_LISTS:
                for item in items:
                    _check_multiaddr(item)
            return items
        if type_name == "int":
            if isinstance(value, float) or not isinstance(value, (int, str)):
                raise ConfigError("write a whole number")
            return int(value)
        if type_name == "float":
            if not isinstance(value, (int, float, str)):
                raise ConfigError("write a number")
            number = float(value)
            if not math.isfinite(number):
                raise ConfigError("write a finite number")
            return number
        if not isinstance(value, str):
            raise ConfigError("write a string (in quotes)")
        return value

    def _check(self) -> None:
        def where(name: str) -> str:
            source = self.sources.get(name, "default")
            return f"environment variable {ENV_PREFIX}{name.upper()}" if source == "env" else source

        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level {self.log_level!r} in {where('log_level')}: use debug, info, warning or error")
        if not self.listen:
            raise ConfigError(f"listen is empty in {where('listen')}: give at least one multiaddr")
        unknown = [p for p in self.dht_protocols if p not in DHT_PROTOCOLS]
        if unknown or not self.dht_protocols:
            raise ConfigError(f"dht_protocols {self.dht_protocols!r} in {where('dht_protocols')}: "
                              f"use one or both of {', '.join(DHT_PROTOCOLS)}")
        if self.max_connections_per_ip < 1:
            raise ConfigError(f"max_connections_per_ip in {where('max_connections_per_ip')} must be at least 1")
        if self.links_listen and not re.fullmatch(r"[^:\s]+:[0-9]{1,5}", self.links_listen):
            raise ConfigError(f"links_listen {self.links_listen!r} in {where('links_listen')}: "
                              "write host:port, e.g. 0.0.0.0:8480")
        if self.links_listen and not 0 <= int(self.links_listen.rsplit(":", 1)[1]) <= 65535:
            raise ConfigError(f"links_listen {self.links_listen!r} in {where('links_listen')}: not a port number")

    def check_offer(self) -> None:
        """A daemon cannot offer more CPUs or memory than this machine has."""
        have = default_cpus()
        if not self.cpus <= have:
            raise ConfigError(f"cpus {self.cpus:g} (from {self.sources.get('cpus', 'default')}) is more than "
                              f"this machine has ({have:g}); offer at most {have:g}")
        total = machine_memory()
        if total and not self.memory <= total:
            raise ConfigError(f"memory {self.memory / 2**30:.1f} GiB (from {self.sources.get('memory', 'default')}) "
                              f"is more than this machine has ({total / 2**30:.1f} GiB); offer at most that")

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
# dht_protocols = ["/p2pcompute/kad/1.0.0", "/ipfs/lan/kad/1.0.0"]  # the second: kubo's LAN DHT
"""


def write_default_file(data_dir: Path) -> None:
    path = data_dir / CONFIG_FILE
    if not path.exists():
        path.write_text(DEFAULT_FILE_TEXT)
