"""The teacher's view on the real app: a class, students with real machines, the teacher's
roster and commands applied through the control layer, and what students may not see."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.webapp.conftest import Browser, with_csrf
from webapp import ext
from webapp.class_routes import REGISTRY, SYNC
from webapp.class_sync import THUMB_CELLS, ClassSync, catalogue
from webapp.classes import ALPHABET, CODE_LENGTH, ClassRegistry
from webapp.pages import TOKEN


class Teacher:
    def __init__(self, app: Flask) -> None:
        self.http = app.test_client()
        self.http.get("/class/new")
        with_csrf(self.http)
        answer = self.http.post("/class/new", data={"title": "workshop"})
        assert answer.status_code == 302, answer.get_data(as_text=True)
        self.code = answer.headers["Location"].split("/")[2]

    def roster(self) -> dict[str, Any]:
        answer = self.http.get(f"/class/{self.code}/roster")
        assert answer.status_code == 200
        data: dict[str, Any] = answer.get_json()
        return data

    def command(self, **body: Any) -> Any:
        return self.http.post(f"/class/{self.code}/command", json=body)


@pytest.fixture
def teacher(app: Flask) -> Iterator[Teacher]:
    made = Teacher(app)
    yield made
    app.extensions[REGISTRY].end(made.code)


def sync_of(app: Flask) -> ClassSync:
    sync: ClassSync = app.extensions[SYNC]
    return sync


def machine_config(app: Flask, client: FlaskClient) -> Any:
    """The configuration of the machine behind ``client``'s cookie."""
    with client.session_transaction() as cookie:
        token = cookie[TOKEN]
    sess = ext.sessions(app).get(token)
    assert sess is not None
    return sess.config


def join(student: FlaskClient, code: str, name: str) -> Any:
    return student.post("/class/join", data={"code": code, "name": name})


def published(app: Flask, teacher: Teacher, count: int,
              ok: Callable[[dict[str, Any]], bool] = lambda s: True,
              timeout: float = 20.0) -> list[dict[str, Any]]:
    """The roster once ``count`` students have a publication that satisfies ``ok``."""
    deadline = time.monotonic() + timeout
    while True:
        sync_of(app).tick(time.monotonic())
        students = teacher.roster()["students"]
        if len(students) == count and all(s["status"] and ok(s["status"]) for s in students):
            return list(students)
        assert time.monotonic() < deadline, students
        time.sleep(0.1)


def test_codes_are_short_and_from_an_unambiguous_alphabet(teacher: Teacher) -> None:
    assert len(teacher.code) == CODE_LENGTH
    assert set(teacher.code) <= set(ALPHABET) and not set("01OIL") & set(ALPHABET)


def test_the_teacher_sees_every_student_s_machine_with_its_thumbnail(
        app: Flask, teacher: Teacher, browser: Callable[[], Browser]) -> None:
    ada, bob = browser(), browser()
    assert join(ada.http, teacher.code.lower(), "Ada").status_code == 302  # any case
    assert join(bob.http, f" {teacher.code[:3]}-{teacher.code[3:]} ", "Bob").status_code == 302
    ada.ready()
    bob.ready()
    assert ada.emit("set_requested_size", {"device": "vm0", "size": 128 << 20})["ok"]
    ada.wait_view(lambda v: v["devices"]["vm0"]["plugged_size"] == 128 << 20)

    def settled(s: dict[str, Any]) -> bool:
        return bool(s["devices"]) and all(d["driver_state"] == "idle" for d in s["devices"])

    students = published(app, teacher, 2, settled)
    assert [s["name"] for s in students] == ["Ada", "Bob"]
    by_name = {s["name"]: s["status"] for s in students}
    assert by_name["Ada"]["devices"][0]["plugged_size"] == 128 << 20
    assert by_name["Bob"]["devices"][0]["plugged_size"] == 64 << 20
    for status in by_name.values():
        assert status["runstate"] == "running" and status["connected"]
        assert status["budget"]["machine_limit"] > 0
        for dev in status["devices"]:
            thumb = base64.b64decode(dev["thumb"])
            assert 0 < len(thumb) <= THUMB_CELLS
            assert "guest" not in dev and "host" not in dev  # the roster stays small
    # the thumbnail shows what is plugged: Ada's vm0 has twice Bob's plugged cells
    def plugged_cells(status: dict[str, Any]) -> int:
        return sum(1 for c in base64.b64decode(status["devices"][0]["thumb"]) if c not in (0,))

    assert plugged_cells(by_name["Ada"]) == 2 * plugged_cells(by_name["Bob"])


def test_pause_all_and_resume_all_reach_every_machine(
        app: Flask, teacher: Teacher, browser: Callable[[], Browser]) -> None:
    students = [browser(), browser()]
    for i, student in enumerate(students):
        join(student.http, teacher.code, f"s{i}")
        student.ready()
    answer = teacher.command(action="pause")
    assert answer.status_code == 200 and answer.get_json()["seq"] >= 1
    published(app, teacher, 2, lambda s: s["runstate"] == "paused")
    for student in students:
        assert student.http.get("/api/machine/status").get_json()["runstate"] == "paused"
        notice = student.wait_for(lambda m: m["name"] == "class_notice")["args"][0]
        assert notice == {"kind": "pause", "text": "your teacher paused every machine"}
    teacher.command(action="resume")
    published(app, teacher, 2, lambda s: s["runstate"] == "running")
    for student in students:
        assert student.http.get("/api/machine/status").get_json()["runstate"] == "running"


def test_a_pushed_lesson_replaces_every_machine_and_its_goals_show(
        app: Flask, teacher: Teacher, browser: Callable[[], Browser]) -> None:
    student = browser()
    join(student.http, teacher.code, "Ada")
    student.ready()
    lesson = catalogue()["lesson:02-reboot"].scenario
    cfg = lesson.machines[lesson.default_machine].config
    answer = teacher.command(action="lesson", target="02-reboot")
    assert answer.status_code == 200
    notice = student.wait_for(lambda m: m["name"] == "class_notice", 20)["args"][0]
    assert notice["kind"] == "lesson" and notice["url"] == "/lessons/02-reboot"
    assert machine_config(app, student.http) == cfg
    [entry] = published(app, teacher, 1, lambda s: s["goals"] is not None)
    goals = entry["status"]["goals"]
    assert goals["name"] == "02-reboot" and goals["total"] == len(lesson.goals)
    assert [g["title"] for g in goals["goals"]] == [g.title for g in lesson.goals]
    assert teacher.roster()["lesson"] == "lesson:02-reboot"
    # a student joining later starts in the lesson too
    late = browser()
    answer = join(late.http, teacher.code, "Late")
    assert answer.status_code == 302 and answer.headers["Location"] == "/lessons/02-reboot"
    assert machine_config(app, late.http) == cfg


def test_students_never_see_the_class_or_another_student(
        app: Flask, teacher: Teacher, browser: Callable[[], Browser]) -> None:
    ada, bob = browser(), browser()
    join(ada.http, teacher.code, "Ada")
    join(bob.http, teacher.code, "Bob")
    [a, b] = published(app, teacher, 2)
    for student in (ada, bob):
        for path in (f"/class/{teacher.code}/roster", f"/class/{teacher.code}/teacher",
                     f"/class/{teacher.code}/students/{a['id']}",
                     f"/class/{teacher.code}/students/{b['id']}/state"):
            assert student.http.get(path).status_code == 403, path
        assert student.http.post(f"/class/{teacher.code}/command",
                                 json={"action": "pause"}).status_code == 403
        assert student.http.post(f"/class/{teacher.code}/end").status_code == 403
    # a stranger without any cookie: the same
    stranger = app.test_client()
    assert stranger.get(f"/class/{teacher.code}/roster").status_code == 403
    # what a student learns about their class: its code, title and their own name only
    me = ada.http.get("/class/me").get_json()["class"]
    assert me == {"code": teacher.code, "title": "workshop", "name": "Ada"}


def test_the_read_only_view_shows_one_machine_and_changes_nothing(
        app: Flask, teacher: Teacher, browser: Callable[[], Browser]) -> None:
    ada = browser()
    join(ada.http, teacher.code, "Ada")
    ada.ready()
    [entry] = published(app, teacher, 1, lambda s: bool(s["devices"]))
    page = f"/class/{teacher.code}/students/{entry['id']}"
    assert teacher.http.get(page).status_code == 200
    state = teacher.http.get(page + "/state").get_json()
    assert state["name"] == "Ada"
    assert {len(base64.b64decode(d["host"])) for d in state["status"]["devices"]} == {128}
    for method in ("post", "put", "delete", "patch"):
        for path in (page, page + "/state", page + "/run", page + "/machine/state"):
            status = getattr(teacher.http, method)(path, json={"action": "pause"}).status_code
            assert 400 <= status < 500, (method, path, status)
    assert ada.http.get("/api/machine/status").get_json()["runstate"] == "running"
    # the teacher's own machine actions act on the teacher's own session, never Ada's
    assert teacher.http.post("/api/machine/run", json={"action": "pause"}).status_code == 200
    assert ada.http.get("/api/machine/status").get_json()["runstate"] == "running"
    # no other class's teacher gets in
    other = Teacher(app)
    try:
        assert other.http.get(page).status_code == 403
        assert other.http.get(f"/class/{other.code}/students/{entry['id']}").status_code == 404
    finally:
        app.extensions[REGISTRY].end(other.code)


def test_bad_commands_and_codes_are_clear_4xx(app: Flask, teacher: Teacher) -> None:
    for body in ({"action": "reboot"}, {"action": "lesson", "target": "../../etc/passwd"},
                 {"action": "scenario"}, [1, 2], {"action": None}):
        answer = teacher.command(**body) if isinstance(body, dict) else teacher.http.post(
            f"/class/{teacher.code}/command", json=body)
        assert answer.status_code == 400 and answer.get_json()["ok"] is False
    for code in ("nope", "0OIL11", "A" * 500, "ÄÖÜÄÖÜ"):
        assert teacher.http.get(f"/class/{code}/roster").status_code == 404
    assert teacher.http.post("/class/new", data={}, headers={"X-CSRFToken": ""}
                             ).status_code == 400  # CSRF on every POST


def test_a_student_who_leaves_is_gone_from_the_roster(
        app: Flask, teacher: Teacher, browser: Callable[[], Browser]) -> None:
    ada = browser()
    join(ada.http, teacher.code, "Ada")
    published(app, teacher, 1)
    assert ada.http.post("/class/leave").status_code == 200
    sync_of(app).tick(time.monotonic())
    assert teacher.roster()["students"] == []
    assert ada.http.get("/class/me").get_json()["class"] is None


def test_the_registry_bounds_classes_and_students_and_purges_expired_ones() -> None:
    from webapp.classes import ClassError
    from webapp.store import MemoryStore

    store = MemoryStore()
    reg = ClassRegistry(store, max_classes=2, max_students=2, ttl=0.3)
    a, secret = reg.create("a <script>x</script>\n\x00")
    assert a.title == "a <script>x</script>"  # one line, printable; the DOM shows text
    reg.create("b")
    with pytest.raises(ClassError) as full:
        reg.create("c")
    assert full.value.status == 503
    reg.join(a.code, "t1", "x" * 500)
    reg.join(a.code, "t2", "")
    again = reg.join(a.code, "t1", "renamed")  # the same seat, not a third
    assert len(reg.students(a.code)) == 2
    assert again == reg.membership("t1")
    assert max(len(s.name) for s in reg.students(a.code)) <= 40
    with pytest.raises(ClassError) as crowded:
        reg.join(a.code, "t3", "c")
    assert crowded.value.status == 429
    assert reg.is_teacher(a.code, secret) and not reg.is_teacher(a.code, secret[:-1] + "x")
    assert not reg.is_teacher(a.code, None)
    assert [reg.command(a.code, "pause").seq for _ in range(5)] == [1, 2, 3, 4, 5]
    assert reg.last_command(a.code) == 5
    assert [c.seq for c in reg.commands_after(a.code, 3)] == [4, 5]
    time.sleep(0.4)
    reg.create("after")  # expired classes leave room, and leave nothing behind
    assert reg.get(a.code) is None and reg.membership("t1") is None
    assert store.hash_all(f"class:{a.code}:members") == {}
