"""Attack 3: stored XSS delivered by CSRF, a player that loads from other origins, no CSP.

A recording's machine/device names and a scenario's device ids reached ``innerHTML`` and ran
on opening ``/s/ID``; ``/replay?src=/\\host/...`` loaded a recording from another origin; a
cross-site form could ``POST /s/ID/start`` or ``/lessons/NAME/start`` and replace the
visitor's machine. (Chromium checks of the rendering and the CSP are in
tests/browser/test_csp_and_xss.py.)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import websocket

from tests.security.conftest import Visitor
from webapp.headers import CSP
from webapp.live import LiveServer

ROOT = Path(__file__).resolve().parents[2]
HTML_SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\|\s*safe\b")


def test_no_html_sinks_in_the_page_code() -> None:
    files = [p for p in (ROOT / "static").glob("*.js")] + list((ROOT / "templates").glob("*"))
    assert len(files) >= 8
    hits = [f"{p.name}:{n}: {line.strip()}" for p in files
            for n, line in enumerate(p.read_text().splitlines(), 1) if HTML_SINKS.search(line)]
    assert hits == []


def test_no_inline_script_in_any_page(server: LiveServer, visitor: Callable[[], Visitor]) -> None:
    v = visitor()
    for path in ("/", "/lessons", "/lessons/02-reboot", "/replay"):
        html = v.get(path).text
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (path, tag)


@pytest.mark.parametrize("src", [
    "/\\evil.example/x.ndjson", "//evil.example/x.ndjson", "https://evil.example/x.ndjson",
    "/\\/evil.example/x.ndjson", "/static/app.js", "/shared/../x.ndjson",
    "/shared/abcdefgh.ndjson?x=//evil", "javascript:alert(1)", "/shared/abcdefgh.yaml",
    "/shared/abcdefg.ndjson", " /shared/abcdefgh.ndjson", "/shared/abcdefgh.ndjson\n",
])
def test_replay_loads_only_this_servers_shared_recordings(server: LiveServer, src: str) -> None:
    answer = requests.get(server.url + "/replay", params={"src": src}, timeout=10)
    assert answer.status_code == 400, (src, answer.status_code)
    assert "data-src" not in answer.text


def test_replay_accepts_a_shared_recording_link(server: LiveServer) -> None:
    answer = requests.get(server.url + "/replay", params={"src": "/shared/Ab-_0123.ndjson"},
                          timeout=10)
    assert answer.status_code == 200 and 'data-src="/shared/Ab-_0123.ndjson"' in answer.text
    # the player checks the same pattern before it fetches (static/replay.js)
    js = (ROOT / "static" / "replay.js").read_text()
    assert r"SHARED_SRC = /^\/shared\/[A-Za-z0-9_-]{8}\.ndjson$/;" in js
    assert "SHARED_SRC.test(src)" in js


def _generation(server: LiveServer) -> int:
    (sess,) = server.manager._sessions.values()
    return sess.generation


def test_cross_site_posts_cannot_replace_the_visitors_machine(
        server: LiveServer, visitor: Callable[[], Visitor], tmp_path: Path) -> None:
    server.app.config["VMEMLAB_SHARE_DIR"] = str(tmp_path)
    scenario = (ROOT / "scenarios" / "bundled" / "lessons" / "02-reboot.yaml").read_bytes()
    (tmp_path / "Scen_001.yaml").write_bytes(scenario)
    v = visitor()
    v.settled()
    generation = _generation(server)
    # a cross-site form posts with the visitor's cookie (SameSite=Lax does not stop a
    # same-site attacker page) but cannot know the token
    forged = requests.Session()
    forged.cookies.update(v.http.cookies)
    for path, data in [("/lessons/02-reboot/start", {}), ("/s/Scen_001/start", {}),
                       ("/lessons/02-reboot/start", {"csrf_token": "guess"}),
                       ("/api/machine", {"preset": "default"}),
                       ("/api/machine/reboot", {"mode": "no-driver"})]:
        answer = forged.post(server.url + path, data=data, timeout=10, allow_redirects=False)
        assert answer.status_code == 400, (path, answer.status_code)
        assert "CSRF" in answer.text, answer.text
    for path in ("/api/machine/hmp", "/share", "/api/machine/requested-size"):
        answer = forged.post(server.url + path, json={"line": "system_reset"}, timeout=10)
        assert answer.status_code == 400 and "CSRF" in answer.json()["error"], path
    assert _generation(server) == generation
    # the page itself (token from its meta tag / the form field) still works
    page = v.get("/lessons").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    started = requests.post(server.url + "/lessons/02-reboot/start",
                            data={"csrf_token": token.group(1)}, cookies=v.http.cookies,
                            timeout=30, allow_redirects=False)
    assert started.status_code == 302
    assert _generation(server) == generation + 1
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', v.get("/").text)
    assert meta is not None
    assert v.post("/s/Scen_001/start", allow_redirects=False).status_code == 302


def test_scripts_get_a_token_from_the_api(server: LiveServer) -> None:
    http = requests.Session()
    assert http.post(server.url + "/api/machine", json={"preset": "default"},
                     timeout=10).status_code == 400
    token = http.get(server.url + "/api/csrf-token", timeout=10).json()["csrf_token"]
    answer = http.post(server.url + "/api/machine", json={"preset": "default"},
                       headers={"X-CSRFToken": token}, timeout=30)
    assert answer.status_code == 200 and answer.json()["ok"]


def test_socketio_refuses_other_origins(server: LiveServer,
                                        visitor: Callable[[], Visitor]) -> None:
    """A page on another origin opens the WebSocket with the visitor's cookie: refused."""
    v = visitor()
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    for origin in ("http://evil.example", "null", f"http://127.0.0.1:{server.port}.evil"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, origin=origin, cookie=v.cookie, timeout=5)
        assert refused.value.status_code == 400
    assert len(server.manager) == 0
    ws = websocket.create_connection(url, origin=server.url, cookie=v.cookie, timeout=5)
    try:
        opened = ws.recv()
        assert isinstance(opened, str) and opened.startswith("0{")  # engine.io "open"
        ws.send("40")  # socket.io connect: the session's machine starts
        connected = ws.recv()
        assert isinstance(connected, str) and connected.startswith("40")
    finally:
        ws.close()
    assert len(server.manager) == 1


def test_every_response_has_the_security_headers(server: LiveServer,
                                                 visitor: Callable[[], Visitor]) -> None:
    v = visitor()
    answers = [v.get(p) for p in ("/", "/static/app.js", "/static/vendor/plotly.min.js",
                                  "/replay", "/lessons", "/healthz", "/nope", "/api/nope",
                                  "/shared/abcdefgh.ndjson", "/replay?src=//x")]
    answers.append(requests.get(server.url + "/api/machine/status", timeout=10))  # 403
    answers.append(v.post("/api/machine/hmp", data="{", headers={"Content-Type":
                                                                 "application/json"}))
    for answer in answers:
        h = answer.headers
        assert h["Content-Security-Policy"] == CSP, answer.url
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "same-origin"
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["frame-ancestors"] == "'self'"
    assert "unsafe-eval" not in CSP
