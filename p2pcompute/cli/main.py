"""Entry point of the ``p2pcompute`` command."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from .. import __version__
from ..errors import P2PComputeError
from .daemon import DATA_DIR_HELP
from .output import print_error

# Each module has register(subparsers) adding its commands; order = order in --help.
COMMAND_MODULES = [
    "p2pcompute.cli.daemon",
    "p2pcompute.cli.control",
    "p2pcompute.cli.dashboard_cmd",
    "p2pcompute.cli.devnet",
    "p2pcompute.cli.ops_cmd",
    "p2pcompute.cli.validate_cmd",
    "p2pcompute.cli.jobs_cmd",
    "p2pcompute.cli.storage_cmd",
    "p2pcompute.cli.data_cmd",
    "p2pcompute.cli.dht_cmd",
    "p2pcompute.cli.simulate_cmd",
    "p2pcompute.cli.completion_cmd",
]

DESCRIPTION = """\
p2pcompute: a volunteer-powered peer-to-peer compute network.

Every peer is one daemon (`p2pcompute join`). Commands other than join, devnet
and demo talk to the daemon of a data dir through its local control API; point
them at it with --data-dir or P2PCOMPUTE_HOME (default ~/.p2pcompute).
"""

EPILOG = """\
configuration: <data dir>/config.toml, overridden by P2PCOMPUTE_* environment
variables, overridden by flags. `p2pcompute config show` prints what is in force.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2pcompute",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"p2pcompute {__version__}")
    # global options: before the command here, or after it (each command adds them with SUPPRESS)
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help=DATA_DIR_HELP)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except P2PComputeError as exc:
        print_error(str(exc), json_mode=getattr(args, "json", False))
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:  # trio nurseries wrap what their tasks raised
        error = _user_error_in(group)
        if error is None:
            raise
        print_error(str(error), json_mode=getattr(args, "json", False))
        return 1


def _user_error_in(group: BaseExceptionGroup) -> P2PComputeError | None:
    """The error to show when a group holds only our errors and cancellations; else None."""
    ours, rest = group.split(P2PComputeError)
    if ours is None:
        return None
    if rest is not None:
        _, other = rest.split((KeyboardInterrupt, SystemExit))
        if other is not None:
            return None  # a bug alongside: let its traceback through
    error: BaseException = ours
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error  # type: ignore[return-value]


if __name__ == "__main__":
    sys.exit(main())
