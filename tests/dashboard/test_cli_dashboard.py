"""``p2pcompute dashboard``: the link is the daemon's API URL and the ticket's path; it is opened only with a
desktop and without --no-open; without a daemon, a clear error."""

from __future__ import annotations

import json
import sys

import pytest

from p2pcompute.cli import dashboard_cmd
from p2pcompute.cli.main import main


class FakeClient:
    url = "http://127.0.0.1:4321"

    def _call(self, method, path, body):
        assert (method, path) == ("POST", "/v1/dashboard/ticket")
        return {"ticket": "T", "path": "/dashboard/login?ticket=T"}

    def close(self):
        pass


@pytest.fixture
def opened(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(dashboard_cmd, "client_for", lambda args: FakeClient())
    monkeypatch.setattr(dashboard_cmd.webbrowser, "open", lambda url, new=0: calls.append(url) or True)
    monkeypatch.setattr(sys, "platform", "linux")
    return calls


def test_the_link_is_printed_and_opened_with_a_desktop(opened, monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":0")
    assert main(["dashboard", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"url": "http://127.0.0.1:4321/dashboard/login?ticket=T", "opened": True}
    assert opened == [out["url"]]


@pytest.mark.parametrize("desktop,flags", [(False, []), (True, ["--no-open"])])
def test_the_link_is_only_printed_without_a_desktop_or_with_no_open(opened, monkeypatch, capsys, desktop, flags):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if desktop:
        monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert main(["dashboard", *flags]) == 0
    assert "http://127.0.0.1:4321/dashboard/login?ticket=T" in capsys.readouterr().out
    assert opened == []


def test_without_a_daemon_it_says_so(tmp_path, capsys):
    assert main(["dashboard", "--data-dir", str(tmp_path), "--no-open"]) == 1
    assert "no daemon is running" in capsys.readouterr().err
