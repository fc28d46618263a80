"""The teacher's view in Chromium: a teacher's context and two student contexts (each its own
cookie, so its own machine) on the live server.

What is asserted is what the pages drew (cards, canvases and their data attributes, text) and
what the students' machines did (their own JSON API), never the teacher page's network.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from webapp.class_routes import REGISTRY
from webapp.live import LiveServer

MiB = 1024 * 1024


@pytest.fixture
def teacher_page(chromium: Any, live_server: LiveServer) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000},
                                   base_url=live_server.url)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto("/class/new")
    page.fill('input[name="title"]', "Workshop <i>one</i>")
    page.click("#class-create")
    page.wait_for_url("**/teacher")
    yield page
    live_server.app.extensions[REGISTRY].end(page.text_content("#class-code"))
    context.close()


def join(page: Any, code: str, name: str) -> None:
    page.goto(f"/class/join?code={code}")
    page.fill("#join-name", name)
    page.click("#join-submit")
    page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
    page.wait_for_function(
        f"() => document.getElementById('class-line')?.dataset.code === '{code}'")


def card(name: str) -> str:
    return f'article.student-card:has(h2.student-name:text-is("{name}"))'


def runstate(page: Any) -> str:
    return str(page.request.get("/api/machine/status").json()["runstate"])


def test_the_teacher_sees_two_students_live_and_steers_them(
        teacher_page: Any, new_page: Any) -> None:
    teacher = teacher_page
    code = teacher.text_content("#class-code")
    assert teacher.text_content("h1") == "Workshop <i>one</i>"  # text, never markup
    ada, bob = new_page(), new_page()
    join(ada, code, "Ada")
    bob_name = "Bob <img src=x onerror=alert(1)>"  # a name is text, never markup
    join(bob, code, bob_name)

    # both machines appear as cards with drawn thumbnails, in the order they joined
    teacher.wait_for_function("() => document.getElementById('class').dataset.students === '2'",
                              timeout=20_000)
    teacher.wait_for_selector(f'{card("Ada")} canvas.thumb[data-cells]', timeout=20_000)
    teacher.wait_for_selector(f'{card(bob_name)} canvas.thumb[data-cells]', timeout=20_000)
    assert teacher.locator("h2.student-name").all_text_contents() == ["Ada", bob_name]
    assert teacher.locator("#class-grid img").count() == 0

    # Ada grows vm0: her card follows; Bob's does not move
    ada.evaluate("""async () => {
        const { send } = await import("/static/transport.js");
        await send("set_requested_size", { device: "vm0", size: 128 * 1024 * 1024 });
    }""")
    teacher.wait_for_function(
        """() => document.querySelector('article.student-card canvas[data-device="vm0"]')
                  ?.dataset.plugged === String(128 * 1024 * 1024)""", timeout=20_000)
    bob_vm0 = teacher.get_attribute(f'{card(bob_name)} canvas[data-device="vm0"]', "data-plugged")
    assert bob_vm0 == str(64 * MiB)
    # the student's page shows the machine's memory budget
    ada.wait_for_function("() => /memory budget: .* of 512 MiB/.test("
                          "document.getElementById('budget').textContent)")

    # pause all: both machines stop, both students are told, the cards say so
    teacher.click("#btn-pause-all")
    for student in (ada, bob):
        student.wait_for_function("() => document.getElementById('class-notice').textContent"
                                  " === 'your teacher paused every machine'", timeout=20_000)
        assert runstate(student) == "paused"
    teacher.wait_for_selector(f'{card("Ada")}[data-runstate="paused"]', timeout=20_000)
    teacher.click("#btn-resume-all")
    for student in (ada, bob):
        student.wait_for_function("() => document.getElementById('class-notice').dataset.kind"
                                  " === 'resume'", timeout=20_000)
        assert runstate(student) == "running"

    # a student sees neither the class nor the other student's machine
    for path in (f"/class/{code}/roster", f"/class/{code}/teacher"):
        assert bob.request.get(path).status == 403
    assert "Ada" not in bob.text_content("body")

    # the teacher opens Ada's machine read-only: grids, no controls, nothing changes
    teacher.click(f'{card("Ada")} a.student-open')
    teacher.wait_for_selector('canvas.detail[data-device="vm0"][data-view="host"][data-cells]',
                              timeout=20_000)
    assert teacher.text_content("#student-name") == "Ada"
    assert teacher.locator("button, input, select, form").count() == 0
    state_url = teacher.get_attribute("#student", "data-state")
    csrf = teacher.request.get("/api/csrf-token").json()["csrf_token"]
    for method in ("post", "put", "delete"):
        answer = getattr(teacher.request, method)(
            state_url, headers={"X-CSRFToken": csrf}, data={"action": "pause"})
        assert answer.status == 405, (method, answer.status)
    assert runstate(ada) == "running"
    teacher.go_back()

    # push a lesson: both students land on its page with its machine; progress shows
    teacher.select_option("#push-item", "lesson:02-reboot")
    teacher.click("#btn-push")
    for student in (ada, bob):
        student.wait_for_url("**/lessons/02-reboot", timeout=30_000)
    teacher.wait_for_function(
        """() => [...document.querySelectorAll('p.student-goals')]
                  .filter((p) => /: \\d\\/3 goals$/.test(p.textContent)).length === 2""",
        timeout=30_000)
    assert teacher.text_content("#class-lesson") == "pushed: lesson:02-reboot"
    assert not teacher.errors and not ada.errors and not bob.errors


@pytest.fixture
def reclaiming_server(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> LiveServer:
    """The package's server, closing a machine 2 s after its last browser went (saving it
    first). Not a second server: one process has one Socket.IO server, and a second
    LiveServer would take it over from the package's for every later test."""
    monkeypatch.setattr(live_server.manager.settings, "idle_pause", 1.0)
    monkeypatch.setattr(live_server.manager.settings, "idle_reclaim", 2.0)
    return live_server


def test_a_reclaimed_machine_tells_its_student_and_restores_the_last_save(
        chromium: Any, reclaiming_server: LiveServer) -> None:
    server = reclaiming_server
    context = chromium.new_context(base_url=server.url)
    context.add_init_script("localStorage.setItem('vmemlab.tour', 'seen')")  # no tour over it
    try:
        page = context.new_page()
        page.goto("/")
        page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=15_000)
        page.evaluate("""async () => {
            const { send } = await import("/static/transport.js");
            await send("set_requested_size", { device: "vm0", size: 96 * 1024 * 1024 });
        }""")
        page.wait_for_function("() => document.querySelector('canvas.grid[data-device=\"vm0\"]')"
                               "?.dataset.plugged === '48'", timeout=15_000)
        page.close()  # the student goes away; the server reclaims the machine, saved first
        deadline = time.monotonic() + 20
        while server.manager.stats()["machines"]:
            assert time.monotonic() < deadline, "the idle machine was never reclaimed"
            time.sleep(0.2)
        page = context.new_page()
        page.goto("/")
        page.wait_for_selector("#machine-lost #btn-restore-save", timeout=15_000)
        assert "the server's idle reclaim" in page.text_content("#machine-lost")
        page.wait_for_function("() => document.querySelector('canvas.grid[data-device=\"vm0\"]')"
                               "?.dataset.plugged === '32'", timeout=15_000)  # a new machine
        page.click("#btn-restore-save")
        page.wait_for_selector('#machine-lost[data-restored="1"]', timeout=15_000)
        page.wait_for_function("() => document.querySelector('canvas.grid[data-device=\"vm0\"]')"
                               "?.dataset.plugged === '48'", timeout=15_000)  # the saved one
        devices = page.request.get("/api/machine/status").json()["devices"]
        assert devices[0]["requested_size"] == 96 * MiB
    finally:
        context.close()


