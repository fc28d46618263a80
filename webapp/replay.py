"""Recordings and lessons in the browser.

* ``/replay`` -- the recording player (``templates/replay.html`` + ``static/replay.js``): it
  replays a ``vmemlab play --record`` file with no machine behind it; ``?src=/path`` loads one
  from this server.
* ``/lessons`` -- the bundled lessons (scenarios with ``goals``, docs/scenarios.md).
  ``POST /lessons/NAME/start`` gives this browser session a fresh machine built from the
  lesson's machine; ``/lessons/NAME`` shows the narration and the goals beside the sandbox
  (an iframe of ``/``: same cookie, same machine); ``/lessons/NAME/goals`` checks every goal
  against the session's machine right now (the page polls it and latches reached goals).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    render_template,
    render_template_string,
    request,
)

from scenarios.loader import Scenario, ScenarioError, lessons, load_scenario
from scenarios.runner import evaluate

bp = Blueprint("replay", __name__)


@bp.get("/replay")
def replay() -> str:
    src = request.args.get("src", "")
    if not src.startswith("/") or src.startswith("//"):  # same-origin paths only
        src = ""
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


LIST_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>vmemlab lessons</title>
<link rel="stylesheet" href="{{ url_for('static', filename='style.css') }}"></head>
<body><main style="padding:1rem"><h1>vmemlab lessons</h1><ul>
{% for name, lesson in lessons.items() %}<li>
<form method="post" action="{{ url_for('replay.start_lesson', name=name) }}">
<strong>{{ lesson.title }}</strong> — {{ lesson.summary }}
<button type="submit">start</button></form></li>{% endfor %}
</ul><p><a href="{{ url_for('replay.replay') }}">Replay a recording</a></p></main></body></html>
"""

LESSON_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ lesson.title }} — vmemlab</title>
<link rel="stylesheet" href="{{ url_for('static', filename='style.css') }}">
<style>
 .lesson { display: grid; grid-template-columns: minmax(16rem, 24rem) 1fr; gap: 1rem;
           height: 100vh; }
 .lesson aside { padding: 1rem; overflow: auto; }
 .lesson iframe { width: 100%; height: 100%; border: 0; }
 #goals li { margin: 0.5rem 0; } #goals li.done { color: #009E73; }
 #goals li .why { color: #555; font-size: 0.85rem; display: block; }
 @media (max-width: 900px) { .lesson { grid-template-columns: 1fr; height: auto; }
   .lesson iframe { height: 80vh; } }
</style></head>
<body><div class="lesson" id="lesson" data-goals="{{ url_for('replay.lesson_goals', name=name) }}">
<aside><h1>{{ lesson.title }}</h1><p>{{ lesson.summary }}</p>
{% for text in narration %}<p>» {{ text }}</p>{% endfor %}
<h2>Goals <span id="score">0/{{ lesson.goals|length }}</span></h2><ol id="goals">
{% for goal in lesson.goals %}<li data-index="{{ loop.index0 }}">
<span class="mark">○</span> {{ goal.title }}
{% if goal.hint %}<details><summary>hint</summary><code>{{ goal.hint }}</code></details>{% endif %}
<span class="why"></span></li>{% endfor %}</ol>
<form method="post" action="{{ url_for('replay.start_lesson', name=name) }}">
<button type="submit">start over</button></form></aside>
<iframe src="{{ url_for('pages.index') }}" title="The sandbox"></iframe></div>
<script>
(function () {
  const root = document.getElementById("lesson");
  const reached = new Set();
  async function poll() {
    try {
      const r = await fetch(root.dataset.goals, { credentials: "same-origin" });
      const data = await r.json();
      data.goals.forEach((g) => {
        const li = document.querySelector(`#goals li[data-index="${g.index}"]`);
        if (g.reached) reached.add(g.index);
        const done = reached.has(g.index);
        li.classList.toggle("done", done);
        li.querySelector(".mark").textContent = done ? "✓" : "○";
        li.querySelector(".why").textContent = done ? "" : (g.why || []).join("; ");
      });
      document.getElementById("score").textContent = `${reached.size}/${data.goals.length}`;
      root.dataset.reached = String(reached.size);
    } catch (err) { /* the server restarts: keep polling */ }
    setTimeout(poll, 1000);
  }
  poll();
})();
</script></body></html>
"""


@bp.get("/lessons")
def lesson_list() -> str:
    return render_template_string(LIST_PAGE, lessons=_lessons())


@bp.post("/lessons/<name>/start")
def start_lesson(name: str) -> Any:
    from flask import redirect, url_for

    from webapp import manager
    from webapp.pages import session_token

    lesson = _lesson(name)
    cfg = lesson.machines[lesson.default_machine].config
    mgr = manager(current_app)
    blocks = max((d.size // d.block_size for d in cfg.devices), default=0)
    total = cfg.boot_ram + sum(d.size for d in cfg.devices)
    if total > mgr.settings.max_memory or blocks > mgr.settings.max_blocks:
        return jsonify(error="this lesson's machine is larger than this server allows"), 400
    token = session_token()
    assert token is not None
    mgr.replace(token, cfg)
    return redirect(url_for("replay.lesson_page", name=name))


@bp.get("/lessons/<name>")
def lesson_page(name: str) -> str:
    lesson = _lesson(name)
    narration = [s.params["text"] for s in lesson.steps if s.kind == "say"]
    return render_template_string(LESSON_PAGE, lesson=lesson, name=name, narration=narration)


@bp.get("/lessons/<name>/goals")
def lesson_goals(name: str) -> Any:
    from webapp import manager

    lesson = _lesson(name)
    sess = manager(current_app).get(_token())
    machine = sess.machine if sess is not None else None
    if machine is None:
        return jsonify(goals=[{"index": i, "goal": g.title, "reached": False,
                               "why": ["no machine: start the lesson"]}
                              for i, g in enumerate(lesson.goals)])
    residency = any("resident" in g.condition for g in lesson.goals)
    snap = machine.snapshot(residency=residency)
    counts = Counter(r.event.kind for r in machine.bus.since(0))
    console = list(machine.console)
    out = []
    for i, goal in enumerate(lesson.goals):
        why = evaluate(snap, goal.condition, counts, console)
        out.append({"index": i, "goal": goal.title, "reached": not why, "why": why})
    return jsonify(goals=out)
