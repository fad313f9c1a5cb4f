"""Printing helpers shared by the commands: JSON for scripts, rich for people."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Wide and unwrapped when not a terminal, so logs and pipes keep whole addresses.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 250)
err_console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 250)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_error(message: str, *, json_mode: bool = False) -> None:
    if json_mode:
        sys.stderr.write(json.dumps({"error": message}) + "\n")
    else:
        err_console.print(f"[bold red]error:[/] {message}", highlight=False)


def add_json_flag(parser: Any) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
