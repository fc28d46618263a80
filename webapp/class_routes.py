"""The teacher's view over HTTP: create a class, join it, watch it, steer it.

Teacher (authenticated by the class's secret in the teacher's signed session cookie; with
``VMEMLAB_CLASS_TOKEN`` set -- ``vmemlab serve --class-token`` -- creating a class needs it):

* ``GET/POST /class/new`` -- the form, then a new class: its code and the teacher's page;
* ``GET /class/CODE/teacher`` -- the live thumbnail grid (``static/class.js`` polls
  ``GET /class/CODE/roster`` once a second);
* ``POST /class/CODE/command`` -- ``{"action": "pause"|"resume"|"lesson"|"scenario",
  "target": NAME}``: every student's process applies it (``webapp.class_sync``);
* ``GET /class/CODE/students/ID`` (+ ``/state``) -- one student's machine, read-only: there
  is no route under it that changes anything (any other method is a 405);
* ``POST /class/CODE/end``.

Student: ``GET/POST /class/join`` (the code, a name), ``GET /class/me`` (the page's class
line), ``POST /class/leave``. A wrong code counts against ``VMEMLAB_RATELIMIT_CLASS_GUESSES``
(so does a wrong class token). A student's requests never reach the roster or another
student's machine: those answer 403 to everybody but the class's teacher.

``/class/scenarios/NAME`` is the page a pushed (non-lesson) scenario opens, built like a
lesson page.
"""

from __future__ import annotations

import hmac
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from webapp import admission, ext, ratelimits
from webapp.class_sync import ClassSync, catalogue
from webapp.classes import ACTIONS, ClassError, ClassInfo, ClassRegistry, normalize_code
from webapp.pages import session_token
from webapp.sessions import LimitError

bp = Blueprint("classes", __name__)

REGISTRY = "vmemlab_classes"
SYNC = "vmemlab_class_sync"
TEACHER = "vmemlab.teacher"  #: session key: {code: secret} of the classes this browser runs
MAX_TEACHER_CLASSES = 4  # secrets one teacher's cookie keeps
GUESSES = "VMEMLAB_RATELIMIT_CLASS_GUESSES"


def init_app(app: Flask) -> None:
    registry = ClassRegistry(ext.store(app), max_classes=int(app.config["VMEMLAB_MAX_CLASSES"]),
                             max_students=int(app.config["VMEMLAB_MAX_CLASS_STUDENTS"]),
                             ttl=float(app.config["VMEMLAB_CLASS_TTL"]))
    sessions = ext.sessions(app)
    from webapp import socketio

    sync = ClassSync(registry, sessions, app.config["VMEMLAB_WORKER_NAME"],
                     interval=float(app.config["VMEMLAB_CLASS_INTERVAL"]),
                     start_task=socketio.start_background_task)
    sessions.on_close.append(sync.stop)
    app.extensions[REGISTRY] = registry
    app.extensions[SYNC] = sync
    app.register_blueprint(bp)
    sync.start()


def registry() -> ClassRegistry:
    reg: ClassRegistry = current_app.extensions[REGISTRY]
    return reg


def sync() -> ClassSync:
    worker: ClassSync = current_app.extensions[SYNC]
    return worker


def _refuse(err: ClassError | LimitError) -> ResponseReturnValue:
    abort(err.status, description=str(err))


def _class(code: str) -> ClassInfo:
    canonical = normalize_code(code)
    info = registry().get(canonical) if canonical else None
    if info is None:
        abort(404, description="no class has this code")
    return info


def _teacher_class(code: str) -> ClassInfo:
    """The class, if this browser is its teacher; 403 otherwise (a student included)."""
    info = _class(code)
    secrets = session.get(TEACHER)
    secret = secrets.get(info.code) if isinstance(secrets, dict) else None
    if not registry().is_teacher(info.code, secret):
        abort(403, description="only this class's teacher sees this")
    return info


# ------------------------------------------------------------------------ the teacher

@bp.get("/class/new")
def new_class_form() -> str:
    session_token()
    return render_template("class_new.html",
                           needs_token=bool(current_app.config["VMEMLAB_CLASS_TOKEN"]))


@bp.post("/class/new")
def new_class() -> ResponseReturnValue:
    required = current_app.config["VMEMLAB_CLASS_TOKEN"]
    if required:
        given = request.form.get("token", "")
        if not hmac.compare_digest(given.encode(), str(required).encode()):
            ratelimits.hit(GUESSES)
            abort(403, description="a class on this server needs the class token the "
                                   "server was started with (vmemlab serve --class-token)")
    try:
        info, secret = registry().create(request.form.get("title", ""))
    except ClassError as err:
        return _refuse(err)
    secrets = session.get(TEACHER)
    kept = dict(secrets) if isinstance(secrets, dict) else {}
    kept[info.code] = secret
    session[TEACHER] = dict(list(kept.items())[-MAX_TEACHER_CLASSES:])
    return redirect(url_for("classes.teacher_page", code=info.code))


@bp.get("/class/<code>/teacher")
def teacher_page(code: str) -> str:
    info = _teacher_class(code)
    items = [{"key": key, "kind": item.kind, "title": item.scenario.title}
             for key, item in catalogue().items()]
    return render_template("class.html", info=info, items=items,
                           join_url=url_for("classes.join_form", code=info.code,
                                            _external=True),
                           max_students=registry().max_students)


@bp.get("/class/<code>/roster")
def roster(code: str) -> ResponseReturnValue:
    """Every student with the thumbnail-sized part of their last publication."""
    info = _teacher_class(code)
    students = []
    for entry in registry().students(info.code):
        status = dict(entry.status or {})
        status["devices"] = [{k: v for k, v in d.items() if k not in ("guest", "host")}
                             for d in status.get("devices", [])]
        students.append({"id": entry.id, "name": entry.name, "joined": entry.joined,
                         "status": status or None})
    return jsonify(ok=True, code=info.code, title=info.title, lesson=info.lesson,
                   students=students)


@bp.post("/class/<code>/command")
def command(code: str) -> ResponseReturnValue:
    info = _teacher_class(code)
    data: Any = request.get_json(silent=True)
    if not isinstance(data, dict):
        data = request.form
    action = data.get("action")
    if action not in ACTIONS:
        return jsonify(ok=False, error=f"action: one of {', '.join(ACTIONS)}"), 400
    target = None
    if action in ("lesson", "scenario"):
        target = data.get("target")
        if not isinstance(target, str) or f"{action}:{target}" not in catalogue():
            return jsonify(ok=False, error=f"no bundled {action} of this name"), 400
    try:
        done = registry().command(info.code, action, target)
    except ClassError as err:
        return jsonify(ok=False, error=str(err)), err.status
    return jsonify(ok=True, seq=done.seq, action=done.action, target=done.target)


@bp.get("/class/<code>/students/<student>")
def student_page(code: str, student: str) -> str:
    info = _teacher_class(code)
    entry = registry().student(info.code, student)
    if entry is None:
        abort(404, description="no such student in this class")
    return render_template("class_student.html", info=info, student=entry)


@bp.get("/class/<code>/students/<student>/state")
def student_state(code: str, student: str) -> ResponseReturnValue:
    info = _teacher_class(code)
    entry = registry().student(info.code, student)
    if entry is None:
        return jsonify(ok=False, error="no such student in this class"), 404
    return jsonify(ok=True, id=entry.id, name=entry.name, status=entry.status)


@bp.post("/class/<code>/end")
def end_class(code: str) -> ResponseReturnValue:
    info = _teacher_class(code)
    registry().end(info.code)
    secrets = session.get(TEACHER)
    if isinstance(secrets, dict):
        session[TEACHER] = {k: v for k, v in secrets.items() if k != info.code}
    return redirect(url_for("classes.new_class_form"))


# ------------------------------------------------------------------------ students

@bp.get("/class/join")
def join_form() -> str:
    session_token()
    return render_template("class_join.html", code=normalize_code(request.args.get("code"))
                           or "")


@bp.post("/class/join")
def join() -> ResponseReturnValue:
    token = session_token()
    assert token is not None
    code = normalize_code(request.form.get("code"))
    info = registry().get(code) if code else None
    if info is None:
        ratelimits.hit(GUESSES)  # only wrong codes count: a room behind one NAT joins freely
        abort(404, description="no class has this code; check it with your teacher")
    try:
        membership = registry().join(info.code, token, request.form.get("name", ""))
    except ClassError as err:
        return _refuse(err)
    sync().joined(token, membership)
    if info.lesson is not None:  # the class is in a lesson: this student starts it too
        item = catalogue().get(info.lesson)
        if item is not None:
            try:
                admission.replacing(token)
                sync().start_item(token, info.lesson)
            except LimitError as err:
                return _refuse(err)
            return redirect(item.url)
    return redirect(url_for("pages.index"))


@bp.get("/class/me")
def me() -> ResponseReturnValue:
    """This browser's class, for the page's class line (``{"class": null}``: none)."""
    token = session_token(create=False)
    membership = registry().membership(token) if token else None
    info = registry().get(membership.code) if membership else None
    if membership is None or info is None:
        return jsonify(ok=True, **{"class": None})
    entry = registry().student(info.code, membership.student)
    return jsonify(ok=True, **{"class": {"code": info.code, "title": info.title,
                                         "name": entry.name if entry else ""}})


@bp.post("/class/leave")
def leave() -> ResponseReturnValue:
    token = session_token(create=False)
    if token:
        registry().leave(token)
    return jsonify(ok=True)


# ------------------------------------------------------------------------ pushed scenarios

def _scenario_item(name: str) -> Any:
    item = catalogue().get(f"scenario:{name}")
    if item is None:
        abort(404)
    return item


@bp.get("/class/scenarios/<name>")
def scenario_page(name: str) -> str:
    from webapp.replay import lesson_view

    return lesson_view(_scenario_item(name).scenario,
                       goals_url=url_for("classes.scenario_goals", name=name),
                       start_url=url_for("classes.scenario_start", name=name),
                       key=f"scenario:{name}")


@bp.get("/class/scenarios/<name>/goals")
def scenario_goals(name: str) -> Any:
    from webapp.replay import goals_answer

    return goals_answer(_scenario_item(name).scenario)


@bp.post("/class/scenarios/<name>/start")
def scenario_start(name: str) -> Any:
    from webapp.replay import start_scenario

    error = start_scenario(_scenario_item(name).scenario)
    if error is not None:
        return error
    return redirect(url_for("classes.scenario_page", name=name))
