"""Recordings and lessons in the browser.

* ``/replay`` -- the recording player (``templates/replay.html`` + ``static/replay.js``): it
  replays a ``vmemlab play --record`` file with no machine behind it; ``?src=/shared/ID.ndjson``
  loads a shared one from this server (any other ``src`` is a 400: a link must not make the
  player fetch from elsewhere -- ``/\\host/x`` is another origin to a browser).
* ``/lessons`` -- the bundled lessons (scenarios with ``goals``, docs/scenarios.md).
  ``POST /lessons/NAME/start`` gives this browser session a fresh machine built from the
  lesson's machine; ``/lessons/NAME`` shows the narration and the goals beside the sandbox
  (an iframe of ``/``: same cookie, same machine); ``/lessons/NAME/goals`` checks every goal
  against the session's machine right now (the page polls it and latches reached goals).

:func:`start_scenario`, :func:`goals_answer` and :func:`lesson_view` are shared with the
shared-scenario pages of ``webapp.sharing`` (``/s/ID``).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

from flask import (
    Blueprint,
    abort,
    jsonify,
    render_template,
    request,
)

from control import control_for
from scenarios.loader import Scenario, ScenarioError, lessons, load_scenario
from scenarios.predictions import measure
from scenarios.runner import evaluate, lesson_residency
from webapp import ext

bp = Blueprint("replay", __name__)

#: the only recordings the player loads by URL: this server's shared ones (static/replay.js
#: checks the same pattern)
SHARED_SRC = re.compile(r"/shared/[A-Za-z0-9_-]{8}\.ndjson")


@bp.get("/replay")
def replay() -> str:
    src = request.args.get("src", "")
    if src and not SHARED_SRC.fullmatch(src):
        abort(400, description="src: only a shared recording of this server "
                               "(/shared/ID.ndjson) can be loaded by link")
    return render_template("replay.html", src=src)


# ------------------------------------------------------------------------------ lessons

def _lessons() -> dict[str, Scenario]:
    out: dict[str, Scenario] = {}
    for path in lessons():
        name = os.path.basename(path).rsplit(".", 1)[0]
        try:
            out[name] = load_scenario(path)
        except ScenarioError:  # a broken lesson is a test failure, not a server crash
            continue
    return out


def _lesson(name: str) -> Scenario:
    lesson = _lessons().get(name)
    if lesson is None:
        abort(404)
    return lesson


def _token() -> str | None:
    from webapp.pages import session_token

    return session_token(create=False)


@bp.get("/lessons")
def lesson_list() -> str:
    return render_template("lessons.html", lessons=_lessons())


def start_scenario(scenario: Scenario) -> Any:
    """Give this browser session a fresh machine built from ``scenario``'s (first) machine.

    ``None`` when done, else an error response (400: larger than this server allows).
    """
    from webapp import admission
    from webapp.pages import session_token
    from webapp.scenario_machines import TooLargeError, check_fits, start_scenario_machine
    from webapp.sessions import LimitError

    mgr = ext.sessions()
    try:
        check_fits(mgr, scenario, "this lesson")
    except TooLargeError as err:
        return jsonify(error=str(err)), 400
    token = session_token()
    assert token is not None
    try:
        admission.replacing(token)
        start_scenario_machine(mgr, token, scenario)
    except LimitError as err:
        abort(err.status, description=str(err))
    return None


def lesson_view(scenario: Scenario, *, goals_url: str, start_url: str, key: str,
                next_lesson: tuple[str, Scenario] | None = None) -> str:
    """The lesson page (narration, goals, the sandbox beside them) for any scenario.

    ``key`` names the lesson in the browser's progress store (static/lesson.js);
    ``next_lesson`` is (start URL, lesson) of the one after it, if any.
    """
    narration = [s.params["text"] for s in scenario.steps if s.kind == "say"]
    return render_template("lesson.html", lesson=scenario, narration=narration,
                           goals_url=goals_url, start_url=start_url, key=key,
                           next_lesson=next_lesson)


def _next(name: str) -> tuple[str, Scenario] | None:
    from flask import url_for

    every = _lessons()
    names = list(every)
    if name not in names or names.index(name) + 1 >= len(names):
        return None
    after = names[names.index(name) + 1]
    return url_for("replay.start_lesson", name=after), every[after]


@bp.post("/lessons/<name>/start")
def start_lesson(name: str) -> Any:
    from flask import redirect, url_for

    error = start_scenario(_lesson(name))
    if error is not None:
        return error
    return redirect(url_for("replay.lesson_page", name=name, fresh=1))


@bp.get("/lessons/<name>")
def lesson_page(name: str) -> str:
    from flask import url_for

    return lesson_view(_lesson(name), goals_url=url_for("replay.lesson_goals", name=name),
                       start_url=url_for("replay.start_lesson", name=name),
                       key=f"lesson:{name}", next_lesson=_next(name))


@bp.get("/lessons/<name>/goals")
def lesson_goals(name: str) -> Any:
    return goals_answer(_lesson(name))


def goals_answer(lesson: Scenario) -> Any:
    """Every goal of ``lesson`` checked against this session's machine right now (JSON)."""
    sess = ext.sessions().get(_token())
    machine = sess.machine if sess is not None else None
    if machine is None:
        return jsonify(goals=[{"index": i, "goal": g.title, "reached": False,
                               "why": ["no machine: start the lesson"]}
                              for i, g in enumerate(lesson.goals)])
    control = control_for(machine)
    snap = machine.snapshot(residency=lesson_residency(lesson))
    counts = Counter(r.event.kind for r in machine.bus.since(0))
    console = list(machine.console)
    out = []
    for i, goal in enumerate(lesson.goals):
        why = evaluate(snap, goal.condition, counts, console, control.watch.settled,
                       unsettled=control.unsettled)
        entry: dict[str, Any] = {"index": i, "goal": goal.title, "reached": not why, "why": why}
        if goal.predict is not None:  # measured now, from the machine (never from the file)
            entry["measured"] = measure(snap, goal.predict)
        out.append(entry)
    return jsonify(goals=out)
