"""Client of a daemon's control API, found through its data dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from ..errors import DaemonNotRunning, P2PComputeError, UserError
from .config import API_FILE, TOKEN_FILE


class ApiError(P2PComputeError):
    """The daemon answered with an error."""


def _action(path: str) -> str:
    """What a route does, in the command's words: ``/v1/dht/find-peer`` -> ``dht find-peer``."""
    words = path.split("?")[0].removeprefix("/v1/").strip("/").replace("/", " ")
    return words or "the request"


class ControlClient:
    def __init__(self, data_dir: Path, timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        api_path = self.data_dir / API_FILE
        if not api_path.exists():
            raise DaemonNotRunning(
                f"no daemon is running for data dir {self.data_dir} (no {api_path}); "
                "start one with `p2pcompute join`, or point at another with --data-dir / P2PCOMPUTE_HOME"
            )
        self.url = api_path.read_text().strip()
        try:
            token = (self.data_dir / TOKEN_FILE).read_text().strip()
        except PermissionError:
            raise UserError(f"cannot read {self.data_dir / TOKEN_FILE}: run as the user who runs the daemon") from None
        self._http = httpx.Client(base_url=self.url, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call (httpx keyword arguments); a non-200 answer raises ApiError."""
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise DaemonNotRunning(
                f"the daemon of {self.data_dir} does not answer at {self.url}; "
                "it may have crashed (its api file is stale): start it again with `p2pcompute join`"
            ) from None
        except httpx.TimeoutException:
            raise ApiError(f"{_action(path)}: the daemon of {self.data_dir} did not answer in time") from None
        if resp.status_code != 200:
            try:
                message = resp.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = resp.text.strip()[:200] or f"the daemon answered {resp.status_code}"
            raise ApiError(f"{_action(path)} failed: {message}")
        return resp

    def _call(self, method: str, path: str, json: Any = None, params: dict | None = None) -> Any:
        resp = self.request(method, path, json=json, params=params)
        return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp.text

    def status(self) -> dict:
        return self._call("GET", "/v1/status")

    def peers(self) -> list[dict]:
        return self._call("GET", "/v1/peers")["peers"]

    def ping(self, peer: str) -> dict:
        return self._call("POST", "/v1/ping", {"peer": peer})

    def connect(self, address: str) -> dict:
        return self._call("POST", "/v1/connect", {"address": address})

    def config(self) -> dict:
        return self._call("GET", "/v1/config")

    def metrics(self) -> str:
        return self._call("GET", "/metrics")

    def close(self) -> None:
        self._http.close()
