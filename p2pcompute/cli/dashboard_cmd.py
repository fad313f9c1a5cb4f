"""``dashboard``: a one-time login link to the web dashboard of the local daemon (and open it)."""

from __future__ import annotations

import argparse
import os
import sys
import webbrowser

from .control import client_for
from .daemon import add_data_dir
from .output import add_json_flag, console, print_json

HELP = """Print a link that signs this browser in to the dashboard the daemon of the data dir serves on
its control API's address (127.0.0.1 by default). The link works once, within five minutes, and
leaves a session cookie; the session ends when the browser or the daemon stops. Where there is a
desktop, the link is also opened in the default browser (--no-open: print it only)."""


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dashboard", help="print (and open) a one-time login link to the web dashboard",
                       description=HELP)
    d.add_argument("--no-open", action="store_true", help="print the link only; do not start a browser")
    add_data_dir(d)
    add_json_flag(d)
    d.set_defaults(func=cmd_dashboard)


def has_desktop() -> bool:
    """A browser can be shown: a display on Linux and the BSDs; always on macOS and Windows."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_dashboard(args: argparse.Namespace) -> int:
    client = client_for(args)
    try:
        answer = client._call("POST", "/v1/dashboard/ticket", {})
    finally:
        client.close()
    url = client.url.rstrip("/") + answer["path"]
    opened = False
    if not args.no_open and has_desktop():
        try:
            opened = webbrowser.open(url, new=2)
        except webbrowser.Error:
            opened = False
    if args.json:
        print_json({"url": url, "opened": opened})
        return 0
    console.print("Open this link to sign in to the dashboard (it works once, within 5 minutes):", highlight=False)
    print(url)
    if opened:
        console.print("(opened in your browser)", highlight=False)
    return 0
