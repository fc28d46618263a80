"""Fixtures for the attack tests: a real server on a loopback port and visitors with cookies.

Each attack runs against ``webapp.live.LiveServer`` (Werkzeug's threaded server, real
sockets, real machines running the real guest) the way the attacker ran it, and asserts the
refusal. ``Visitor`` is what a script does: a cookie from ``GET /api/csrf-token`` and the
token sent back as ``X-CSRFToken``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.webapp.conftest import web_config
from webapp.live import LiveServer

Config = dict[str, Any]


def base_config(**extra: Any) -> Config:
    return {"TESTING": True, "VMEMLAB_DEFAULT_MACHINE": web_config,
            "VMEMLAB_VIEW_INTERVAL": 0.05, "VMEMLAB_SAMPLE_INTERVAL": 0.2, **extra}


@pytest.fixture
def serve() -> Iterator[Callable[..., LiveServer]]:
    """``serve(**config)``: a live server for this test, closed (machines too) at its end."""
    servers: list[LiveServer] = []

    def start(**extra: Any) -> LiveServer:
        server = LiveServer(base_config(**extra))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def server(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve()


class Visitor:
    """One browser session driven like a script: cookie + CSRF token, real HTTP."""

    def __init__(self, server: LiveServer) -> None:
        self.url = server.url
        self.http = requests.Session()
        answer = self.http.get(self.url + "/api/csrf-token", timeout=10)
        answer.raise_for_status()
        self.token: str = answer.json()["csrf_token"]
        self.http.headers["X-CSRFToken"] = self.token

    @property
    def cookie(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.http.post(self.url + path, timeout=60, **kw)

    def hmp(self, line: str) -> str:
        answer = self.post("/api/machine/hmp", json={"line": line})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["output"])

    def settled(self, timeout: float = 20.0) -> dict[str, Any]:
        """The machine's status once the guest booted and its driver settled."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get("/api/machine/status").json()
            if status.get("guest_booted") and all(
                    d["driver_state"] == "idle" and d["plugged_size"] == d["requested_size"]
                    for d in status["devices"]):
                return status
            assert time.monotonic() < deadline, status
            time.sleep(0.02)


@pytest.fixture
def visitor(server: LiveServer) -> Callable[[], Visitor]:
    return lambda: Visitor(server)


def rss() -> int:
    """This process's resident set (the live server runs in it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
