"""``completion bash|zsh``: shell completion scripts, generated from the parser by shtab."""

from __future__ import annotations

import argparse
import sys

SHELLS = ("bash", "zsh", "tcsh")

HELP = """\
Print a completion script for SHELL. Install it once, e.g.:
  bash:  p2pcompute completion bash > ~/.local/share/bash-completion/completions/p2pcompute
  zsh:   p2pcompute completion zsh > "${fpath[1]}/_p2pcompute"   (then restart zsh)
"""


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("completion", help="print a shell completion script (bash, zsh)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or tcsh")
    c.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    from .main import build_parser

    parser = build_parser()
    _mark_paths(parser, shtab)
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0


def _mark_paths(parser: argparse.ArgumentParser, shtab) -> None:
    """Complete directories for ``DIR`` options and files for other paths, in every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_paths(sub, shtab)
            continue
        metavar = str(action.metavar or "")
        if metavar == "DIR" or action.dest in ("data_dir", "dir"):
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif any(word in metavar for word in ("FILE", "PATH", ".yaml", ".tif", "CAR")):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
