"""The presenter's side of the experimental guest requests (docs/extensions.md) through the
page's socket: a held request reaches the page as a ``guest_mem_request`` event and the
``guest_request`` event answers it; bad input is a clear refusal."""

from __future__ import annotations

import threading

from control import control_for
from emulator.config import MiB
from webapp import ext
from webapp.pages import TOKEN


def _lesson_machine(app, b):
    b.ready()
    assert b.http.post("/lessons/09-the-addendum/start").status_code == 302
    with b.http.session_transaction() as flask_session:
        token = flask_session[TOKEN]
    sess = ext.sessions(app).get(token)
    assert sess is not None and sess.machine is not None
    assert sess.machine.devices["vm0"].requests is not None
    assert sess.machine.wait_until(lambda m: m.guest_booted, 30)
    assert control_for(sess.machine).wait_settled(30)
    return sess.machine


def test_presenter_answers_a_held_request(app, browser) -> None:
    b = browser()
    machine = _lesson_machine(app, b)
    answer = b.emit("guest_request", {"device": "vm0", "policy": "ask"})
    assert answer["ok"] and answer["policy"] == "ask", answer
    ctl = control_for(machine)
    done: list[object] = []
    worker = threading.Thread(target=lambda: done.append(ctl.requests.grow(16 * MiB)))
    worker.start()
    assert machine.wait_until(lambda m: ctl.requests.info("vm0")["pending"] is not None, 30)
    asked = b.emit("guest_request", {"pending": True})  # what the page asks after a keyframe
    assert asked["ok"] and len(asked["pending"]) == 1, asked
    event = asked["pending"][0]
    assert event["reason"] == "grow: alloc of 16 MiB failed" and event["size"] == 16 * MiB
    assert event["device"] == "vm0" and event["seq"] == 1
    b.wait_for(lambda m: (m["name"] == "batch" and any(  # and the live batch carried it
        e["kind"] == "guest_mem_request" and e["decision"] == "pending"
        for e in m["args"][0]["events"])) or m["name"] == "keyframe", 30, "the request event")
    granted = b.emit("guest_request", {"device": "vm0", "answer": "grant"})
    assert granted["ok"] and granted["decision"] == "granted", granted
    assert machine.wait_until(lambda m: (ctl.requests.info("vm0")["pending"] or {})
                              .get("seq") == 2, 30)
    denied = b.emit("guest_request", {"device": "vm0", "answer": "deny"})
    assert denied["ok"] and denied["decision"] == "denied"
    worker.join(30)
    assert machine.devices["vm0"].plugged_size == 16 * MiB


def test_bad_answers_are_refused(app, browser) -> None:
    b = browser()
    _lesson_machine(app, b)
    for data, text in (({"device": "vm0", "answer": "grant"}, "no pending guest request"),
                       ({"device": "vm0", "answer": "maybe"}, "answer"),
                       ({"device": "nope", "answer": "grant"}, "nope"),
                       ({"device": "vm0", "policy": "cap", "cap": "3M"}, "multiples"),
                       ("not a dict", "")):
        answer = b.emit("guest_request", data)
        assert answer["ok"] is False and text in answer["error"], (data, answer)
