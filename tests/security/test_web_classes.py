"""The teacher's view under attack, over real HTTP: who may open a class, guessing join codes,
CSRF on every POST, bounded counts, the last-save routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.security.conftest import Visitor
from webapp import serve as serve_module
from webapp.live import LiveServer


def open_class(visitor: Visitor, **form: str) -> requests.Response:
    return visitor.post("/class/new", data={"title": "t", **form}, allow_redirects=False)


def code_of(answer: requests.Response) -> str:
    assert answer.status_code == 302, answer.text
    return answer.headers["Location"].split("/")[2]


def test_opening_a_class_needs_the_server_s_class_token(
        serve: Callable[..., LiveServer]) -> None:
    server = serve(VMEMLAB_CLASS_TOKEN="room-42-token")
    visitor = Visitor(server)
    assert "class token" in visitor.get("/class/new").text
    assert open_class(visitor).status_code == 403
    assert open_class(visitor, token="room-42-toke").status_code == 403
    assert open_class(visitor, token="room-42-token" * 1000).status_code == 403
    code_of(open_class(visitor, token="room-42-token"))


def test_the_cli_passes_the_class_token(monkeypatch: pytest.MonkeyPatch) -> None:
    apps: list[Any] = []
    monkeypatch.setattr(serve_module.socketio, "run", lambda app, **kw: apps.append(app))
    assert serve_module.main(["--class-token", "abc-def-ghi"]) == 0
    (app,) = apps
    assert app.config["VMEMLAB_CLASS_TOKEN"] == "abc-def-ghi"


def test_guessing_join_codes_is_rate_limited_but_a_room_joins_freely(
        serve: Callable[..., LiveServer]) -> None:
    server = serve(VMEMLAB_RATELIMIT_CLASS_GUESSES="5 per minute")
    teacher = Visitor(server)
    code = code_of(open_class(teacher))
    guesser = Visitor(server)
    wrong = "AAAAAA" if code != "AAAAAA" else "BBBBBB"
    for _ in range(5):
        assert guesser.post("/class/join", data={"code": wrong}).status_code == 404
    refused = guesser.post("/class/join", data={"code": wrong})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "wrong class codes" in refused.text
    # the same address (a room behind one NAT) still joins with the right code, 30 times
    for i in range(30):
        student = Visitor(server)
        answer = student.post("/class/join", data={"code": code, "name": f"s{i}"},
                              allow_redirects=False)
        assert answer.status_code == 302, answer.text
    roster = teacher.get(f"/class/{code}/roster").json()
    assert len(roster["students"]) == 30


def test_every_class_post_needs_the_csrf_token(serve: Callable[..., LiveServer]) -> None:
    server = serve()
    teacher = Visitor(server)
    code = code_of(open_class(teacher))
    bare = requests.Session()
    bare.cookies.update(teacher.http.cookies)  # the teacher's own cookie, no token
    for path in ("/class/new", "/class/join", f"/class/{code}/command", f"/class/{code}/end",
                 "/class/leave", "/api/machine/last-save/restore"):
        answer = bare.post(server.url + path, json={"action": "pause"}, timeout=30)
        assert answer.status_code == 400 and "CSRF" in answer.text, (path, answer.status_code)
    assert teacher.get(f"/class/{code}/roster").status_code == 200  # the class is still there


def test_classes_and_students_per_class_are_bounded(serve: Callable[..., LiveServer]) -> None:
    server = serve(VMEMLAB_MAX_CLASSES=2, VMEMLAB_MAX_CLASS_STUDENTS=2)
    teacher = Visitor(server)
    code = code_of(open_class(teacher))
    code_of(open_class(Visitor(server)))
    full = open_class(Visitor(server))
    assert full.status_code == 503 and "2 classes" in full.text
    for name in ("a", "b"):
        assert Visitor(server).post("/class/join", data={"code": code, "name": name},
                                    allow_redirects=False).status_code == 302
    crowded = Visitor(server).post("/class/join", data={"code": code, "name": "c"})
    assert crowded.status_code == 429 and "full" in crowded.text
    # a refused join leaves the class as it was
    names = [s["name"] for s in teacher.get(f"/class/{code}/roster").json()["students"]]
    assert names == ["a", "b"]


def test_the_last_save_routes_need_a_session_and_a_save(serve: Callable[..., LiveServer]
                                                       ) -> None:
    server = serve()
    assert requests.get(server.url + "/api/machine/last-save", timeout=30).status_code == 403
    visitor = Visitor(server)
    assert visitor.get("/api/machine/last-save").json() == {"ok": True, "saved_at": None}
    answer = visitor.post("/api/machine/last-save/restore")
    assert answer.status_code == 404 and answer.json()["ok"] is False
