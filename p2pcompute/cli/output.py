"""Printing helpers shared by the commands: JSON for scripts, rich for people."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from rich.console import Console

# Wide and unwrapped when not a terminal, so logs and pipes keep whole addresses (COLUMNS still wins).
_WIDE = None if os.environ.get("COLUMNS") else 250
console = Console(soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else _WIDE)
err_console = Console(stderr=True, soft_wrap=True, emoji=False, width=None if sys.stderr.isatty() else _WIDE)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_error(message: str, *, json_mode: bool = False) -> None:
    if json_mode:
        sys.stderr.write(json.dumps({"error": message}) + "\n")
    else:
        err_console.print(f"[bold red]error:[/] {message}", highlight=False)


def add_json_flag(parser: Any) -> None:
    """``--json`` after the command; the main parser has it too (before the command), hence SUPPRESS:
    a subcommand that was not given it leaves the main parser's value alone."""
    import argparse

    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON instead of tables")


def peer_labels(peer_ids: list[str], *, width: int | None = None) -> dict[str, str]:
    """How to show each peer ID in a table: whole on a wide screen, else ``12D3Koo…<last 6+>``.

    Never cut by the table (two peers would look the same): when shortened,
    the tail grows until every label is unique among ``peer_ids``.
    """
    width = console.width if width is None else width
    if width >= 160:
        return {p: p for p in peer_ids}
    distinct = set(peer_ids)
    tail = 6
    while True:
        labels = {p: p if len(p) <= tail + 8 else f"{p[:7]}…{p[-tail:]}" for p in distinct}
        if len(set(labels.values())) == len(distinct):
            return labels
        tail += 1
