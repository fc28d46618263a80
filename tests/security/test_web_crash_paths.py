"""Attack 5: crash paths -- malformed input answered with HTML 500s, forged socket events,
cookieless requests that boot machines.

12 of 37 malformed shared files answered 500 (a line that is not an object, deep nesting,
5000-digit integers); a client could emit ``connect``/``disconnect`` into the server's own
handlers; ``GET /api/machine`` without a cookie booted a machine each time and could evict
an idle student's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from flask import Flask

from tests.security.conftest import Visitor
from tests.webapp.conftest import web_config, with_csrf
from webapp import create_app
from webapp import socketio as flask_socketio
from webapp.live import LiveServer

HEAD = json.dumps({"format": "vmemlab-recording", "version": 1, "title": "t",
                   "machines": {"main": {}}})
DEEP = "[" * 100_000 + "]" * 100_000
KEYFRAME = {"t": 0, "type": "keyframe", "machine": "main", "state": {"devices": {}}}


def _as_bytes(files: list[str | bytes]) -> list[bytes]:
    return [f.encode() if isinstance(f, str) else f for f in files]


RECORDINGS = _as_bytes([
    "", "\n\n", "   ", "null", "[]", "1", '"text"', "true", "{", "}", "{}",
    '{"format": "vmemlab-recording"}', '{"format": "vmemlab-recording", "version": 2}',
    '{"format": "vmemlab-recording", "version": "1"}',
    '{"format": "vmemlab-recording", "version": 1}',  # no machines
    '{"format": "vmemlab-recording", "version": 1, "machines": []}',
    '{"format": "vmemlab-recording", "version": 1, "machines": "main"}',
    f"{HEAD}\n[1, 2]", f"{HEAD}\nnull", f"{HEAD}\n42", f'{HEAD}\n"a string"',
    f"{HEAD}\n{DEEP}", DEEP, f'{HEAD}\n{{"t": {"9" * 5000}}}',
    '{"format": "vmemlab-recording", "version": ' + "1" * 5000 + "}",
    f'{HEAD}\n{{"t": "soon", "type": "keyframe"}}', f'{HEAD}\n{{"t": NaN}}',
    f'{HEAD}\n{{"t": Infinity, "type": "say"}}', f'{HEAD}\n{{"t": -1e400}}',
    f"{HEAD}\n{json.dumps(KEYFRAME)}\n{{\"t\": 1, \"type\": \"event\", \"event\": []}}",
    f'{HEAD}\n{{"t": 0, "type": "keyframe", "machine": ["x"], "state": 1}}',
    b"\xff\xfe\x00garbage", b"\x00" * 1000, HEAD.encode("utf-16"),
    "\ufeff" + HEAD, f"{HEAD}\n" + "{" * 5000, f"{HEAD}\n" + '{"a":' * 3000 + "1" + "}" * 3000,
    '{"format": "vmemlab-recording", "version": 1, "machines": {"' + "m" * 100_000 + '": {}}}',
    f"{HEAD}\n" + '{"t": 0, "type": "say", "text": "' + "\\ud800" * 10 + '"}',
])

SCENARIOS = _as_bytes([
    "a: [", "{{{", "- - - -", "!!python/object/apply:os.system ['true']",
    "title: t\nsteps: 1", "title: [1, 2]\nmachines: {}", "\t- tab",
    "machines:\n  main:\n    memory: " + "9" * 5000,
    "a: &a [1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]",
    "title: t\nmachines: {main: {devices: [{id: 1}]}}\nsteps: []",
    "title: " + "[" * 2000, "key: value\nkey: value", "%YAML 9.9\n---\na: 1",
    "--- !<tag:yaml.org,2002:python/none> ''", b"\xff\xfe\x00",
])


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    app = create_app({"TESTING": True, "VMEMLAB_DEFAULT_MACHINE": web_config,
                      "VMEMLAB_RATELIMIT_SHARES": "1000 per minute",
                      "VMEMLAB_RATELIMIT_MACHINES": "1000 per minute"})
    yield app
    app.extensions["vmemlab"].close_all()


def _upload(client: Any, data: bytes, name: str) -> Any:
    import io

    return client.post("/share", data={"file": (io.BytesIO(data), name)},
                       content_type="multipart/form-data")


def test_forty_malformed_uploads_each_get_a_clear_4xx(app: Flask, tmp_path: Path) -> None:
    app.config["VMEMLAB_SHARE_DIR"] = str(tmp_path)
    client = app.test_client()
    client.get("/")
    with_csrf(client)
    cases = ([(data, "bad.ndjson") for data in RECORDINGS]
             + [(data, "bad.yaml") for data in SCENARIOS]
             + [(data, "noext") for data in RECORDINGS[:8] + SCENARIOS[:4]])
    assert len(cases) >= 40
    answers = []
    for data, name in cases:
        answer = _upload(client, data, name)
        answers.append((answer.status_code, name, data[:40]))
        assert answer.is_json, (name, data[:60])
        body = answer.get_json()
        if answer.status_code == 200:  # accepted: it must also be served without a 500
            for path in (f"/s/{body['id']}", f"/shared/{body['id']}.ndjson",
                         f"/s/{body['id']}/lesson", f"/s/{body['id']}/goals"):
                assert client.get(path).status_code < 500, (path, data[:60])
            continue
        assert 400 <= answer.status_code < 500, (answer.status_code, name, data[:60])
        assert body["ok"] is False and body["error"] and "Traceback" not in body["error"]
    refused = [a for a in answers if a[0] != 200]
    assert len(refused) >= 40, answers


@pytest.mark.parametrize("path", [
    "/s/..%2F..%2Fetc", "/s/%00", "/s/" + "A" * 5000, "/s/abc", "/s/abcdefgh",
    "/s/abcdefgh/lesson", "/s/abcdefgh/goals", "/shared/abcdefgh.yaml",
    "/shared/..%2Fx.ndjson", "/shared/" + "a" * 300, "/replay?src=%00",
    "/replay?src=" + "/" * 10_000, "/lessons/%2e%2e", "/lessons/nope/goals",
    "/lessons/" + "x" * 5000, "/api/machine/block?device=vm0&block=-1",
    "/api/machine/block?device=vm0&block=" + "9" * 5000, "/api/machine/block?device=%00",
    "/api/machine/block", "/api/config/default", "/api/nope",
])
def test_malformed_requests_get_4xx_never_500(app: Flask, path: str) -> None:
    client = app.test_client()
    client.get("/")
    answer = client.get(path)
    assert answer.status_code < 500, (path, answer.status_code)
    if answer.status_code >= 400 and (path.startswith(("/api/", "/shared/"))
                                      or path.endswith("/goals")):
        assert answer.is_json and answer.get_json()["ok"] is False


@pytest.mark.parametrize("body,content_type", [
    (b"{", "application/json"), (b"[" * 50_000, "application/json"),
    (b'{"line": ' + b"9" * 5000 + b"}", "application/json"), (b"\xff\xfe", "application/json"),
    (b'"x"', "application/json"), (b"line=info", "application/x-www-form-urlencoded"),
    (b"--x\r\n", "multipart/form-data; boundary=x"), (b"", "application/json"),
])
def test_malformed_api_bodies_get_4xx(app: Flask, body: bytes, content_type: str) -> None:
    client = with_csrf(app.test_client())
    for route in ("/api/machine/hmp", "/api/machine/guest", "/api/machine/requested-size",
                  "/api/machine/state", "/share"):
        answer = client.post(route, data=body, content_type=content_type)
        assert 400 <= answer.status_code < 500 or (answer.status_code == 200 and not body), \
            (route, body[:20], answer.status_code)
        assert answer.is_json


# ------------------------------------------------------------------ forged socket events

def test_a_client_cannot_send_connect_or_disconnect(app: Flask) -> None:
    http = app.test_client()
    http.get("/")
    sio = flask_socketio.test_client(app, flask_test_client=http)
    assert sio.is_connected()
    mgr = app.extensions["vmemlab"]
    (sess,) = [s for s in mgr._sessions.values() if s.clients]
    generation, sids = sess.generation, set(sess.clients)
    for event in ("disconnect", "connect"):
        for payload in (None, {"reason": "client disconnect"}, "client disconnect", [1]):
            answer = (sio.emit(event, callback=True) if payload is None
                      else sio.emit(event, payload, callback=True))
            assert answer == {"ok": False,
                              "error": "'connect' and 'disconnect' are reserved event names"}
    assert sess.clients == sids and sess.generation == generation
    assert sio.emit("ping_vmem", callback=True)["ok"]
    sio.disconnect()
    assert sess.clients == set()  # the real disconnect still works


# ------------------------------------------------------------------ cookieless requests

def test_cookieless_requests_get_no_machine(server: LiveServer) -> None:
    for path in ("/api/machine", "/api/machine/status", "/api/machine/state",
                 "/api/machine/memory-devices", "/api/machine/block?device=vm0&block=0"):
        answer = requests.get(server.url + path, timeout=10)
        assert answer.status_code == 403, (path, answer.status_code)
        assert "session cookie" in answer.json()["error"]
    assert requests.get(server.url + "/api/machine/recording", timeout=10).status_code == 404
    why: list[Any] = []
    client = socketio.Client(reconnection=False)
    client.on("connect_error", why.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(server.url, transports=["websocket"], wait_timeout=5)
    assert why and "session cookie" in str(why[0]), why
    assert len(server.manager) == 0
    assert requests.get(server.url + "/healthz", timeout=10).json()["machines"] == 0


def test_cookieless_floods_never_evict_an_idle_student(
        serve: Callable[..., LiveServer]) -> None:
    server = serve(VMEMLAB_MAX_MACHINES=1)
    student = Visitor(server)
    student.settled()
    (sess,) = server.manager._sessions.values()
    sess.last_seen = time.monotonic() - 60  # idle, no page open: evictable
    for _ in range(20):
        assert requests.get(server.url + "/api/machine", timeout=10).status_code == 403
    assert list(server.manager._sessions.values()) == [sess] and sess.machine is not None
    assert student.get("/api/machine/status").json()["runstate"] == "running"
