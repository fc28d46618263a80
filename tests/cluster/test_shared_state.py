"""What several server processes share, and what a proxy in front changes.

The shared secret key (one cookie valid on every process), the shared store (memory here, a
real redis-server when installed), the machine registry that tells a returning student why
their machine is new, and the trusted-proxy setting that makes per-client limits work
behind nginx without letting a client pick its own address.

These tests make apps of their own, so they live here, before tests/webapp, whose Socket.IO
test clients use the module-level server of the last app made.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio
from flask import Flask
from itsdangerous import BadSignature

from tests.webapp.conftest import web_config
from webapp import create_app, ext
from webapp.live import LiveServer, free_port
from webapp.store import MemoryStore, RedisStore, Store, open_store


def _app(**config: Any) -> Flask:
    return create_app({"TESTING": True, "VMEMLAB_DEFAULT_MACHINE": web_config, **config})


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        ext.sessions(app).close_all()


# ------------------------------------------------------------------ trusted proxies

def _machine_from(app: Flask, forwarded_for: str) -> int:
    client = app.test_client()
    client.get("/", headers={"X-Forwarded-For": forwarded_for})
    return client.get("/api/machine/status",
                      headers={"X-Forwarded-For": forwarded_for}).status_code


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(apps: list[Flask]) -> None:
    app = _app(VMEMLAB_TRUSTED_PROXIES=1, VMEMLAB_RATELIMIT_MACHINES="1 per minute")
    apps.append(app)
    assert _machine_from(app, "192.0.2.1") == 200
    assert _machine_from(app, "192.0.2.2") == 200  # another student behind the same proxy
    assert _machine_from(app, "192.0.2.1") == 429  # the first one's second machine


def test_without_trusted_proxies_the_header_is_ignored(apps: list[Flask]) -> None:
    app = _app(VMEMLAB_RATELIMIT_MACHINES="1 per minute")
    apps.append(app)
    assert _machine_from(app, "192.0.2.1") == 200
    assert _machine_from(app, "192.0.2.2") == 429  # a client cannot pick its address


# ------------------------------------------------------------------ shared secret key

def test_processes_with_one_key_file_accept_each_others_cookies(tmp_path: Path,
                                                               apps: list[Flask]) -> None:
    key = tmp_path / "secret_key"
    key.write_text("a" * 64 + "\n")
    first, second = (_app(VMEMLAB_SECRET_KEY_FILE=str(key)) for _ in range(2))
    apps += [first, second]
    client = first.test_client()
    client.get("/")
    cookie = client.get_cookie("session")
    assert cookie is not None
    serializer = second.session_interface.get_signing_serializer(second)  # type: ignore[attr-defined]
    assert serializer is not None and serializer.loads(cookie.value)["vmemlab"]
    other = _app()  # a process with a key of its own refuses the cookie
    apps.append(other)
    with pytest.raises(BadSignature):
        other.session_interface.get_signing_serializer(other).loads(cookie.value)  # type: ignore[attr-defined]


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "secret_key"
    key.write_text("short\n")
    with pytest.raises(ValueError, match="16 characters or more"):
        _app(VMEMLAB_SECRET_KEY_FILE=str(key))


# ------------------------------------------------------------------ the shared store

@pytest.fixture
def redis_uri(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed: .ci/run installs it (apt-get install "
                    "redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _exercise(store: Store) -> None:
    assert store.get("k") is None
    assert store.set("k", "v1") and store.get("k") == "v1"
    assert not store.set("k", "v2", only_new=True) and store.get("k") == "v1"
    assert store.set("short", "x", ttl=0.2)
    time.sleep(0.4)
    assert store.get("short") is None
    assert store.set("short", "y", only_new=True)  # an expired key is free again
    store.delete("k")
    assert store.get("k") is None
    store.hash_set("h", "a", "1")
    store.hash_set("h", "b", "2")
    store.hash_delete("h", "a")
    assert store.hash_all("h") == {"b": "2"}


def test_the_memory_store() -> None:
    _exercise(MemoryStore())


def test_the_redis_store_is_shared(redis_uri: str) -> None:
    one, two = open_store(redis_uri), open_store(redis_uri)
    assert isinstance(one, RedisStore)
    _exercise(one)
    one.set("shared", "from one")
    assert two.get("shared") == "from one"


def test_an_unknown_store_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown store 'ftp://'"):
        open_store("ftp://somewhere")


# ------------------------------------------------------------------ the machine registry

def test_a_student_back_after_the_idle_reclaim_is_told(apps: list[Flask]) -> None:
    """The issue's student away 20 minutes, in seconds: the machine is reclaimed while no
    browser is on it, and the next page load says so instead of a silent fresh machine."""
    with LiveServer({"TESTING": True, "VMEMLAB_DEFAULT_MACHINE": web_config,
                     "VMEMLAB_IDLE_PAUSE": 0.5, "VMEMLAB_IDLE_RECLAIM": 1.0}) as server:
        import requests

        http = requests.Session()
        http.get(server.url + "/", timeout=10)
        cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies)

        def visit() -> list[dict[str, Any]]:
            errors: list[dict[str, Any]] = []
            keyframe = threading.Event()
            client = socketio.Client(reconnection=False)
            client.on("keyframe", lambda data: keyframe.set())
            client.on("server_error", errors.append)
            client.connect(server.url, headers={"Cookie": cookie},
                           transports=["websocket"], wait_timeout=10)
            assert keyframe.wait(10)
            time.sleep(0.3)
            client.disconnect()
            return errors

        assert visit() == []
        deadline = time.monotonic() + 10
        while len(server.manager):
            assert time.monotonic() < deadline, "the machine was never reclaimed"
            time.sleep(0.1)
        errors = visit()
        assert len(errors) == 1 and errors[0]["kind"] == "machine_lost"
        assert errors[0]["error"].startswith("your last machine was closed after ")
        assert errors[0]["error"].endswith("without a browser on it (the server's idle "
                                           "reclaim); this is a new machine")


def test_share_ids_are_reserved_in_the_shared_store(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes on one share folder and one store: every id is handed out once and
    both see every share; an expired share leaves the index with its file."""
    from webapp.share_store import ShareStore

    index = MemoryStore()
    one = ShareStore(str(tmp_path), 1 << 20, 3600.0, index)
    two = ShareStore(str(tmp_path), 1 << 20, 3600.0, index)
    ids = [store.store(b"x" * 100, "yaml") for store in (one, two) for _ in range(20)]
    assert len(set(ids)) == 40
    first, last = two.indexed(ids[0]), one.indexed(ids[-1])
    assert first is not None and first["size"] == 100
    assert last is not None and last["ext"] == "yaml"
    # an id another process reserved is never used, even before its file exists
    assert index.set("share:AAAAAAAA", "{}", only_new=True)
    picks = iter(["AAAAAAAA", "BBBBBBBB"])
    monkeypatch.setattr("webapp.share_store.secrets.token_urlsafe", lambda n: next(picks))
    assert one.store(b"y", "yaml") == "BBBBBBBB"
    assert not (tmp_path / "AAAAAAAA.yaml").exists()
    old = time.time() - 7200
    path = tmp_path / f"{ids[0]}.yaml"
    import os

    os.utime(path, (old, old))
    assert one.find(ids[0]) is None
    assert two.indexed(ids[0]) is None and not path.exists()
