"""``p2pcompute join`` (run a peer in the foreground) and ``config show``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import P2PComputeError, UserError
from ..node.config import Config
from .output import add_json_flag, console, err_console, print_json

JOIN_HELP = """\
Run a peer in the foreground until Ctrl-C (SIGINT) or SIGTERM.

On first start it makes the data dir, an ed25519 identity (identity.key, mode
0600) and a commented config.toml. It prints its peer ID and the addresses
others can join through, dials the bootstrap peers (retrying with backoff; if
none answers it runs alone and accepts others), remembers the peers it meets
in peers.json to rejoin after a restart, and serves the local control API
that `status`, `peers` and the other commands use.

examples:
  p2pcompute join --listen /ip4/127.0.0.1/tcp/4001
  p2pcompute join --listen /ip4/127.0.0.1/tcp/4002 --data-dir /tmp/b \\
                  --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...
"""


DATA_DIR_HELP = "the peer's data dir (default: $P2PCOMPUTE_HOME or ~/.p2pcompute)"


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    """``--data-dir`` after the command; also accepted before it (main parser), hence SUPPRESS."""
    parser.add_argument("--data-dir", type=Path, metavar="DIR", default=argparse.SUPPRESS, help=DATA_DIR_HELP)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("join", help="run a peer (the daemon) in the foreground",
                       description=JOIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_dir(p)
    p.add_argument("--listen", action="append", metavar="MULTIADDR",
                   help="address to listen on; repeatable (default /ip4/0.0.0.0/tcp/4040; tcp/0 picks a free port)")
    p.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                   help="a peer to join through, /ip4/HOST/tcp/PORT/p2p/ID; repeatable")
    p.add_argument("--api-port", type=int, metavar="PORT", help="control API port on 127.0.0.1 (default 0: any free port)")
    p.add_argument("--cpus", type=float, help="CPUs offered to the network (default: all of this machine's)")
    p.add_argument("--memory", metavar="SIZE", help="memory offered, e.g. 4GiB (default: half of this machine's)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", dest="labels",
                   help="a label for task placement, e.g. zone=eu; repeatable")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity (default info)")
    p.add_argument("--exit-with-parent", type=int, metavar="PID", help=argparse.SUPPRESS)  # devnet's peers
    add_json_flag(p)
    p.set_defaults(func=cmd_join)

    c = sub.add_parser("config", help="show the configuration in force and where each value comes from")
    c_sub = c.add_subparsers(dest="config_command", metavar="ACTION")
    show = c_sub.add_parser("show", help="print every setting, its value and its source (default, file, env, flag)")
    add_data_dir(show)
    add_json_flag(show)
    show.set_defaults(func=cmd_config_show)
    c.set_defaults(func=lambda args: c.print_help() or 2)


def load_config(args: argparse.Namespace) -> Config:
    flags = {
        "listen": getattr(args, "listen", None),
        "bootstrap": getattr(args, "bootstrap", None),
        "api_port": getattr(args, "api_port", None),
        "cpus": getattr(args, "cpus", None),
        "memory": getattr(args, "memory", None),
        "labels": getattr(args, "labels", None),
        "log_level": getattr(args, "log_level", None),
    }
    return Config.load(args.data_dir, flags)


def cmd_join(args: argparse.Namespace) -> int:
    import trio

    from ..node.daemon import run_daemon, setup_logging

    config = load_config(args)
    config.check_offer()
    setup_logging(config.log_level)

    def ready(status: dict) -> None:
        if args.json:
            print_json(status)
            return
        console.print(f"[bold]p2pcompute peer[/] {status['peer_id']}")
        console.print(f"data dir  {config.data_dir}")
        console.print(f"API       {status['api']}")
        console.print("listening on (give one of these to others as --bootstrap):")
        for a in status["addresses"]:
            console.print(f"  {a}", highlight=False)
        if not config.bootstrap:
            console.print("no bootstrap peers: this peer starts a new network (others can join it)")
        console.print("Ctrl-C stops the peer.")

    def notice(level: str, text: str) -> None:
        err_console.print(f"[yellow]{level}:[/] {text}", highlight=False)

    try:
        trio.run(lambda: run_daemon(config, on_ready=ready, on_notice=notice, parent=args.exit_with_parent))
    except SystemExit:
        raise
    except BaseException as exc:  # trio's groups too: whatever stopped the daemon becomes one line
        if all(isinstance(e, (KeyboardInterrupt, trio.Cancelled)) for e in _leaves(exc)):
            return 130  # Ctrl-C before the daemon's own signal handling was in place
        logging.getLogger("p2pcompute.daemon").debug("the daemon failed", exc_info=exc)
        raise UserError(failure_line(exc)) from None
    return 0


def _config_in_force(data_dir: Path) -> tuple[dict | None, bool]:
    """The running daemon's settings (its flags and environment included), or (None, False)."""
    from ..errors import DaemonNotRunning
    from ..node.client import ApiError, ControlClient

    try:
        client = ControlClient(data_dir, timeout=10)
    except DaemonNotRunning:
        return None, False
    try:
        return client.config(), True
    except (DaemonNotRunning, ApiError):  # gone meanwhile, or a daemon too old to say
        return None, False
    finally:
        client.close()


def failure_line(exc: BaseException) -> str:
    """One line for whatever stopped the daemon, looking inside trio's exception groups."""
    leaves = [e for e in _leaves(exc) if not isinstance(e, (KeyboardInterrupt, SystemExit))]
    ours = [e for e in leaves if isinstance(e, P2PComputeError)]
    if ours:
        return str(ours[0])
    first = leaves[0] if leaves else exc
    if isinstance(first, OSError) and first.strerror:
        where = f" ({first.filename})" if first.filename else ""
        return f"the daemon stopped: {first.strerror}{where}"
    text = str(first).splitlines()[0] if str(first) else ""
    return (f"the daemon stopped on an unexpected error: {type(first).__name__}{': ' + text if text else ''} "
            "(run with --log-level debug for the details)")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def cmd_config_show(args: argparse.Namespace) -> int:
    config = Config.load(args.data_dir)
    rows, running = _config_in_force(config.data_dir)
    if rows is None:
        rows = config.describe()
    if args.json:
        print_json(rows)
        return 0
    from rich.table import Table

    if running:
        console.print(f"settings of the daemon running for {config.data_dir} (flags included):")
    else:
        console.print(f"no daemon runs for {config.data_dir}; settings `p2pcompute join` would start with:")
    table = Table("setting", "value", "source", "meaning")
    for name, row in rows.items():
        table.add_row(name, str(row["value"]), row["source"], Config.HELP.get(name, "where the peer keeps its files"))
    console.print(table)
    return 0
