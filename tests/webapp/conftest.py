"""Fixtures for the web tests: one app (real machines, real guest) and per-test browsers.

One app serves every test in this folder (Flask-SocketIO keeps a single server per
``SocketIO`` object); each test's clients get fresh cookies, hence machines of their own, and
all machines are closed when the test ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from emulator.config import MachineConfig, MemoryDeviceConfig, MiB, NumaNodeConfig
from webapp import create_app, ext, socketio


def web_config() -> MachineConfig:
    """Small but real: two nodes, 2 x 256 MiB devices of 128 blocks each. The guest onlines
    device memory to ZONE_NORMAL, so pinned test data stays in the device it is pinned in."""
    return MachineConfig(
        boot_ram=64 * MiB, smp=2, nodes=[NumaNodeConfig(0, [0]), NumaNodeConfig(1, [1])],
        cmdline="memhp_default_state=online",
        devices=[
            MemoryDeviceConfig(id="vm0", memdev="mem0", size=256 * MiB, node=0,
                               requested_size=64 * MiB),
            MemoryDeviceConfig(id="vm1", memdev="mem1", size=256 * MiB, node=1,
                               requested_size=32 * MiB),
        ],
    )


def with_csrf(client: FlaskClient) -> FlaskClient:
    """What a script does (SECURITY.md): ``GET /api/csrf-token`` (it starts the session
    cookie too), then the token as ``X-CSRFToken`` on every request."""
    token = client.get("/api/csrf-token").get_json()["csrf_token"]
    client.environ_base["HTTP_X_CSRFTOKEN"] = token
    return client


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    app = create_app({
        "TESTING": True,
        "VMEMLAB_DEFAULT_MACHINE": web_config,
        "VMEMLAB_MAX_MACHINES": 8,
        "VMEMLAB_EMIT_HZ": 60.0,
        "VMEMLAB_VIEW_INTERVAL": 0.05,
        "VMEMLAB_COMMAND_TIMEOUT": 20.0,
        # every test comes from 127.0.0.1: one "client" for the per-client rate limits,
        # which tests/security/test_web_limits.py checks with their real defaults
        "VMEMLAB_RATELIMIT_MACHINES": "100000 per minute",
    })
    yield app
    ext.sessions(app).close_all()


@pytest.fixture(autouse=True)
def _close_machines(app: Flask) -> Iterator[None]:
    yield
    ext.sessions(app).close_sessions()
    from webapp.compare_routes import LABS

    app.extensions[LABS].close_all()  # /compare's labs too


def _settled_client(app: Flask) -> tuple[FlaskClient, dict[str, Any]]:
    client = app.test_client()
    assert client.get("/").status_code == 200
    with_csrf(client)
    deadline = time.monotonic() + 10
    while True:  # start every test from a booted guest whose driver has settled
        info = client.get("/api/machine/status").get_json()
        if info["guest_booted"] and all(
                d["driver_state"] == "idle" and d["plugged_size"] == d["requested_size"]
                for d in info["devices"]):
            return client, info
        if time.monotonic() > deadline:
            return client, info
        time.sleep(0.01)


@pytest.fixture
def http(app: Flask) -> FlaskClient:
    """A browser's HTTP side, with its own cookie (and so its own machine)."""
    client, info = _settled_client(app)
    assert info["guest_booted"] and info["devices"][0]["driver_state"] == "idle", info
    return client


class Browser:
    """One browser session: HTTP client + Socket.IO test client sharing the cookie."""

    def __init__(self, app: Flask) -> None:
        self.http = app.test_client()
        assert self.http.get("/").status_code == 200
        with_csrf(self.http)
        self.sio = socketio.test_client(app, flask_test_client=self.http)
        self.received: list[dict[str, Any]] = []

    def emit(self, event: str, data: Any = None) -> dict[str, Any]:
        if data is None:
            answer = self.sio.emit(event, callback=True)
        else:
            answer = self.sio.emit(event, data, callback=True)
        assert isinstance(answer, dict), answer
        return answer

    def pull(self) -> list[dict[str, Any]]:
        # Read the test client's queue by index instead of ``get_received()``: that one
        # rebuilds the list, losing messages the pump thread appends at the same moment.
        queue = self.sio.queue
        new = queue[len(self.received):]
        self.received.extend(new)
        return new

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                 what: str = "message") -> dict[str, Any]:
        """The first received (or future) message matching ``predicate``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            self.pull()
            for msg in self.received[seen:]:
                if predicate(msg):
                    return msg
            seen = len(self.received)
            if time.monotonic() > deadline:
                names = [m["name"] for m in self.received[-20:]]
                last = self.latest_view()
                detail = last and [(dev_id, d["driver_state"], d["plugged_size"],
                                    d["requested_size"])
                                   for dev_id, d in last["devices"].items()]
                errors = [m["args"] for m in self.received if m["name"] == "server_error"]
                raise AssertionError(f"no {what} within {timeout} s (last: {names}; {detail}; "
                                     f"server errors: {errors})")
            time.sleep(0.01)

    def events(self) -> list[dict[str, Any]]:
        self.pull()
        return [ev for m in self.received if m["name"] == "batch" for ev in m["args"][0]["events"]]

    def keyframe(self, timeout: float = 10.0) -> dict[str, Any]:
        msg = self.wait_for(lambda m: m["name"] == "keyframe", timeout, "keyframe")
        return msg["args"][0]

    def ready(self) -> dict[str, Any]:
        """The keyframe, once the guest driver has settled on both devices."""
        frame = self.keyframe()
        self.wait_view(lambda v: v["guest_booted"] and all(
            d["driver_state"] == "idle"
            and d["plugged_size"] == d["requested_size"]
            for d in v["devices"].values()))
        return frame

    def latest_view(self) -> dict[str, Any] | None:
        self.pull()
        for msg in reversed(self.received):
            if msg["name"] in ("view", "keyframe"):
                return msg["args"][0] if msg["name"] == "view" else msg["args"][0]["view"]
        return None

    def wait_view(self, predicate: Callable[[dict[str, Any]], bool],
                  timeout: float = 10.0) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            if m["name"] == "view":
                return predicate(m["args"][0])
            if m["name"] == "keyframe":
                return predicate(m["args"][0]["view"])
            return False

        msg = self.wait_for(match, timeout, "matching view")
        return msg["args"][0] if msg["name"] == "view" else msg["args"][0]["view"]


def device(view: dict[str, Any], dev_id: str) -> dict[str, Any]:
    return view["devices"][dev_id]


def settled_view(dev_id: str, size: int) -> Callable[[dict[str, Any]], bool]:
    def check(view: dict[str, Any]) -> bool:
        d = device(view, dev_id)
        return (d["plugged_size"] == size and d["requested_size"] == size
                and d["driver_state"] == "idle")

    return check


@pytest.fixture
def browser(app: Flask) -> Iterator[Callable[[], Browser]]:
    made: list[Browser] = []

    def make() -> Browser:
        b = Browser(app)
        made.append(b)
        return b

    yield make
    for b in made:
        if b.sio.is_connected():
            b.sio.disconnect()


@pytest.fixture
def shared_browser(browser: Callable[[], Browser]) -> Browser:
    """One browser reused across hypothesis examples."""
    b = browser()
    b.ready()
    return b


def fold(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The page's picture after ``messages``: keyframes reset it, views update it."""
    import base64

    model: dict[str, dict[str, Any]] = {}
    for msg in messages:
        if msg["name"] not in ("keyframe", "view"):
            continue
        view = msg["args"][0]["view"] if msg["name"] == "keyframe" else msg["args"][0]
        if msg["name"] == "keyframe":
            model = {}
        for dev_id, dev in view["devices"].items():
            entry = model.setdefault(dev_id, {})
            entry.update({k: v for k, v in dev.items() if k not in ("guest", "host")})
            for key in ("guest", "host"):
                if key in dev:
                    entry[key] = base64.b64decode(dev[key])
            entry["seq"] = view["seq"]
    return model


def wait_model(b: Browser, predicate: Callable[[dict[str, dict[str, Any]]], bool],
               timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        b.pull()
        model = fold(b.received)
        if model and predicate(model):
            return model
        if time.monotonic() > deadline:
            configs = {k: v.get("config") for k, v in model.items()}
            raise AssertionError(f"page model never matched: {configs}")
        time.sleep(0.01)
