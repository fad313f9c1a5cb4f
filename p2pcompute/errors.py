"""The one exception hierarchy of p2pcompute.

Every error the project raises on purpose derives from ``P2PComputeError``.
Two families matter to callers:

* ``UserError`` — something the person at the keyboard can fix (a bad flag, a
  bad config file, no daemon running). The CLI prints its message and exits 1,
  without a traceback. The message says what is wrong and what to do.
* ``WireError`` / ``TransportError`` — something a remote peer or the network
  did. Protocol code logs these with the peer and request id and carries on;
  they never take the daemon down.
"""

from __future__ import annotations


class P2PComputeError(Exception):
    """Base of every error raised on purpose by p2pcompute."""


class UserError(P2PComputeError):
    """A problem the user can fix; the message says how."""


class ConfigError(UserError):
    """A bad value in config.toml, an environment variable or a flag."""


class DaemonNotRunning(UserError):
    """No daemon answers for the data dir a command was pointed at."""


# --- wire format -----------------------------------------------------------


class WireError(P2PComputeError):
    """Bytes from a peer that do not decode to a valid message.

    ``reason`` is a short machine-readable tag (used as a metrics label).
    """

    reason = "malformed"


class MessageTooLarge(WireError):
    reason = "oversized"


class UnknownVersion(WireError):
    reason = "unknown_version"


class UnknownMessageType(WireError):
    reason = "unknown_type"


class BadSignature(WireError):
    reason = "bad_signature"


# --- transport ---------------------------------------------------------------


class TransportError(P2PComputeError):
    """A message could not be delivered or answered."""


class PeerUnreachable(TransportError):
    """No connection to the peer could be made."""


class RequestFailed(TransportError):
    """A request got no useful reply. Base of timeouts and remote errors."""


class RequestTimeout(RequestFailed):
    """No reply arrived within the request's timeout."""


class PeerDisconnected(RequestFailed):
    """The connection to the peer closed while the request was pending."""


class RemoteError(RequestFailed):
    """The peer answered with an error reply (``code``, ``message``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- content-addressed storage ----------------------------------------------
# Untrusted bytes (CIDs, blocks, CAR files) that do not parse are WireErrors;
# problems of the local block store are StorageErrors.


class BadCid(WireError):
    """Text or bytes that are not a valid CID (or use an unsupported codec/hash)."""

    reason = "bad_cid"


class BadBlock(WireError):
    """A dag-pb, UnixFS or CAR structure that does not decode strictly."""

    reason = "bad_block"


class HashMismatch(WireError):
    """Block bytes that do not hash to the CID they came with."""

    reason = "hash_mismatch"


class StorageError(P2PComputeError):
    """A problem of the local block store."""


class BlockNotFound(StorageError):
    """The block store does not hold a block that was asked for."""


class CorruptBlock(StorageError):
    """A block on disk no longer hashes to its CID (it was removed; fetch it again)."""


class StorageFull(StorageError, UserError):
    """A write would take the block store over its size limit; the message says what to do."""
