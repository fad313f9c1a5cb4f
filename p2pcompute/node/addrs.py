"""Which of our addresses to announce, and which addresses of a peer to keep.

Theory of operation
-------------------
A daemon listening on ``/ip4/0.0.0.0/tcp/4040`` is reachable at every address
of the machine, not at 0.0.0.0. ``announced`` turns listen addresses into
dialable ones: the unspecified address becomes each interface address of its
family, addresses peers observed for us (libp2p identify) are added, and the
user's ``announce`` (replaces the list) and ``no_announce`` (filters it) apply,
as in kubo's ``Addresses.Announce`` / ``NoAnnounce``.

``usable_for`` is the rule for what crosses the network: an unspecified or
link-local address is never usable, and a loopback address is usable only
between two ends that are both on loopback (a peer met at 192.0.2.7 cannot
dial our 127.0.0.1; if it tried, it would reach itself). It applies both ways:
to what we tell a peer about ourselves, and to addresses we store for a peer.

Everything here is pure (interface addresses are passed in) except
``interface_ips``, which reads them from the OS through psutil.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

MAX_ADDRS = 16  # announced, and kept per peer
MAX_ADDR_LEN = 256  # characters of one multiaddr

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def interface_ips() -> list[str]:
    """Every IP address of this machine's interfaces (loopback included)."""
    try:
        import psutil

        found = [a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family.name in ("AF_INET", "AF_INET6")]
    except Exception as exc:  # no psutil, or the OS refused: loopback still works
        log.warning("cannot list network interfaces (%s); announcing loopback only", exc)
        found = []
    return list(dict.fromkeys(["127.0.0.1", *found]))


def ip_of(addr: str) -> IP | None:
    """The IP of ``/ip4/<ip>/...`` or ``/ip6/<ip>/...``; None for anything else."""
    parts = addr.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in ("ip4", "ip6"):
        return None
    try:
        ip = ipaddress.ip_address(parts[2])
    except ValueError:
        return None
    if (parts[1] == "ip4") != (ip.version == 4):
        return None
    return ip


def _unusable(ip: IP) -> bool:
    return ip.is_unspecified or ip.is_link_local or ip.is_multicast


def usable_for(addrs: Iterable[str], remote: str | None) -> list[str]:
    """The addresses of ``addrs`` usable by/for a peer whose connection comes from ``remote``.

    ``remote`` is the peer's IP (``"192.0.2.7"``), or None when nobody remote
    is concerned (our own display). Non-IP addresses (``/dns4/...``, a memnet
    peer ID) pass.
    """
    remote_ip = _parse_ip(remote)
    remote_is_loopback = remote_ip is None or remote_ip.is_loopback
    out: list[str] = []
    for a in addrs:
        if not isinstance(a, str) or not a or len(a) > MAX_ADDR_LEN:
            continue
        ip = ip_of(a)
        if ip is not None and (_unusable(ip) or (ip.is_loopback and not remote_is_loopback)):
            continue
        out.append(a)
    return list(dict.fromkeys(out))[:MAX_ADDRS]


def _parse_ip(text: str | None) -> IP | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None


def expand(listen: Iterable[str], interfaces: Iterable[str]) -> list[str]:
    """Listen addresses with 0.0.0.0 / :: replaced by each interface address of that family."""
    ips = [ip for ip in (_parse_ip(i) for i in interfaces) if ip is not None]
    out: list[str] = []
    for a in listen:
        ip = ip_of(a)
        if ip is None or not ip.is_unspecified:
            out.append(a)
            continue
        rest = a.split("/", 3)[3] if a.count("/") >= 3 else ""
        proto = "ip4" if ip.version == 4 else "ip6"
        for local in ips:
            if local.version == ip.version and not _unusable(local):
                out.append(f"/{proto}/{local}/{rest}".rstrip("/"))
    return list(dict.fromkeys(out))


def matches(addr: str, pattern: str) -> bool:
    """Does ``addr`` match a kubo-style filter?

    ``pattern`` is a full multiaddr (exact match), an address prefix
    (``/ip4/10.0.0.5`` matches every port), or a network in kubo's
    notation ``/ip4/10.0.0.0/ipcidr/8``.
    """
    if addr == pattern:
        return True
    parts = pattern.split("/")
    if len(parts) >= 5 and parts[3] == "ipcidr":
        ip = ip_of(addr)
        try:
            net = ipaddress.ip_network(f"{parts[2]}/{parts[4]}", strict=False)
        except ValueError:
            return False
        return ip is not None and ip.version == net.version and ip in net
    return addr.startswith(pattern.rstrip("/") + "/")


def announced(listen: Iterable[str], interfaces: Iterable[str], observed: Iterable[str] = (),
              announce: Iterable[str] = (), no_announce: Iterable[str] = ()) -> list[str]:
    """Our dialable addresses, routable ones first, loopback last; at most ``MAX_ADDRS``."""
    announce = list(announce)
    if announce:
        addrs = announce
    else:
        # listen addresses carry our /p2p/ID, identify's observed ones may not: compare without it
        bare = [a.split("/p2p/")[0] for a in listen if isinstance(a, str)]
        seen = [a.split("/p2p/")[0] for a in observed if isinstance(a, str)]
        addrs = expand(bare, interfaces) + [a for a in seen if not _is_unspecified(a)]
    filters = list(no_announce)
    kept = [a for a in usable_for(addrs, None) if not any(matches(a, f) for f in filters)]
    return sorted(kept, key=_loopback_last)[:MAX_ADDRS]


def _is_unspecified(addr: str) -> bool:
    ip = ip_of(addr)
    return ip is not None and ip.is_unspecified


def _loopback_last(addr: str) -> int:
    ip = ip_of(addr)
    return 1 if ip is not None and ip.is_loopback else 0
