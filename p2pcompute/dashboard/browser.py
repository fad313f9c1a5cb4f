"""Headless Chromium for the dashboard's browser tests, screenshots and bench (Playwright, a system browser).

Playwright drives the Chromium that the system has (Debian's ``chromium`` package, which ``.ci/run``
installs): ``playwright install`` (which downloads browsers of its own) is never needed.
``P2PCOMPUTE_CHROMIUM`` names another executable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}


def find_chromium() -> tuple[str | None, str]:
    """(the browser's path, "") or (None, why there is none)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "Playwright is not installed (pip install -e '.[test]')"
    named = os.environ.get("P2PCOMPUTE_CHROMIUM")
    if named:
        return (named, "") if os.access(named, os.X_OK) else (None, f"P2PCOMPUTE_CHROMIUM={named} is not executable")
    for candidate in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = candidate if os.path.isabs(candidate) and os.access(candidate, os.X_OK) else shutil.which(candidate)
        if path:
            return path, ""
    return None, "no Chromium found (Debian: apt-get install chromium; or set P2PCOMPUTE_CHROMIUM)"


def launch(playwright, executable: str):
    return playwright.chromium.launch(executable_path=executable, args=ARGS)


def login_url(data_dir: Path) -> str:
    """A fresh one-time login link from ``p2pcompute dashboard`` for the daemon of ``data_dir``."""
    out = subprocess.check_output([sys.executable, "-m", "p2pcompute", "dashboard", "--data-dir", str(data_dir),
                                   "--no-open", "--json"], timeout=60)
    return json.loads(out)["url"]
