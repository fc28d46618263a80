"""Share by link: recordings and scenarios stored on this server under a short random id.

* ``GET /share`` -- the page that does the same from a browser (``templates/share.html``,
  ``static/share-upload.js``): pick a file, or title this session's live recording.
* ``POST /share`` -- an uploaded file (field ``file``: a recording ``.ndjson`` or a scenario
  ``.yaml``, checked first: a recording must parse with ``scenarios.recording.Recording``, a
  scenario must pass the loader, whose ``FILE:LINE: message`` comes back as a 400), or the JSON
  body ``{"session_recording": true}`` (this session's live recording; optional ``"title"``
  and ``"note"``, the sharer's words: the title replaces "Live session", the note becomes the
  recording's summary and its first narration line). Answers ``{"id": ID, "url": "/s/ID"}``.
* ``GET /s/ID`` -- a recording: a redirect to the player (``/replay?src=/shared/ID.ndjson``);
  a scenario: its title, summary and narration with a *start* button. ``POST /s/ID/start``
  gives this session a machine built from the scenario's machine (the lesson flow of
  ``webapp.replay``) and then shows the sandbox -- as a lesson page (``/s/ID/lesson``) when
  the scenario has goals.
* ``GET /shared/ID.ndjson`` -- the stored recording itself.

Files live in ``VMEMLAB_SHARE_DIR`` (default ``<instance path>/shared``) as ``ID.ndjson`` or
``ID.yaml`` (``webapp.share_store``: at most ``VMEMLAB_SHARE_MAX_TOTAL`` together, each gone
after ``VMEMLAB_SHARE_TTL``); an id is ``secrets.token_urlsafe(6)`` (8 characters of
``[A-Za-z0-9_-]``) and every id from a URL is checked against that pattern before any path
is built from it. Uploads are rate-limited per client (count and bytes), and a malformed
file of any kind is a 400 that says why, never a 500.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)

from scenarios.loader import Scenario, ScenarioError, load_scenario, parse_scenario
from scenarios.recording import Recording, RecordingError
from scenarios.recording_format import FormatError, decode_line
from webapp import bodies, ext, ratelimits
from webapp.share_store import ShareStore, StoreFull

bp = Blueprint("sharing", __name__)
log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")  # one character class: linear time
MAX_TITLE = 120  #: characters of a shared live session's title
MAX_NOTE = 1000  #: characters of its note (the first narration line)
#: what a parser may raise on a hostile file besides its own error (deep nesting, wrong
#: types, huge numbers): the file is malformed, not the server broken
MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
             UnicodeError, OverflowError)


class ShareError(ValueError):
    """A file that cannot be shared (the message says why); ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def store_of(app: Flask) -> ShareStore:
    folder = app.config.get("VMEMLAB_SHARE_DIR") or os.path.join(app.instance_path, "shared")
    return ShareStore(str(folder), int(app.config["VMEMLAB_SHARE_MAX_TOTAL"]),
                      float(app.config["VMEMLAB_SHARE_TTL"]), ext.store(app))


def janitor(app: Flask) -> Callable[[], None]:
    """The pump's chore: expired shares go even if nobody asks for them."""
    def sweep() -> None:
        store_of(app).sweep()
    return sweep


def find_shared(share_id: str) -> tuple[str, str]:
    """``(path, extension)`` of a live share; 404 for a malformed, unknown or expired id."""
    found = store_of(current_app).find(share_id)
    if found is None:
        abort(404, description="no such shared file (shares expire after a while)")
    return found


# ------------------------------------------------------------------------------ checking

def check_recording(data: bytes, name: str) -> None:
    try:
        text = data.decode("utf-8")
        rec = Recording.parse(io.StringIO(text))
    except UnicodeDecodeError:
        raise ShareError(f"{name}: not UTF-8 text") from None
    except RecordingError as err:
        raise ShareError(f"{name}: {err}") from None
    except MALFORMED as err:
        log.info("malformed recording %s: %s: %s", name, type(err).__name__, err)
        raise ShareError(f"{name}: not a valid recording ({type(err).__name__})") from None
    header = rec.header if isinstance(rec.header, dict) else {}
    machines = header.get("machines")
    if not isinstance(machines, dict) or not machines:
        raise ShareError(f"{name}:1: the header names no machines")


def check_scenario(data: bytes, name: str) -> Scenario:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ShareError(f"{name}: not UTF-8 text") from None
    try:
        return parse_scenario(text, name)
    except ScenarioError as err:
        raise ShareError(str(err)) from None
    except MALFORMED as err:
        log.info("malformed scenario %s: %s: %s", name, type(err).__name__, err)
        raise ShareError(f"{name}: not a valid scenario ({type(err).__name__})") from None


def kind_of(data: bytes, filename: str) -> str:
    """``ndjson`` (a recording) or ``yaml`` (a scenario), by extension, else by content."""
    lower = filename.lower()
    if lower.endswith((".ndjson", ".jsonl", ".json")):
        return "ndjson"
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    return "ndjson" if data.lstrip()[:1] == b"{" else "yaml"


def store(data: bytes, ext: str) -> str:
    """Write ``data`` under a fresh id; the id (507 when the store is full)."""
    try:
        return store_of(current_app).store(data, ext)
    except StoreFull as err:
        raise ShareError(str(err), 507) from None


def _session_recording() -> bytes:
    from webapp.pages import session_token

    sess = ext.sessions().get(session_token(create=False))
    current = sess.recording_now() if sess is not None else None
    if current is None:
        raise ShareError("this session has no machine (and so no recording) to share")
    f, size = current
    with f:
        return f.read(size)


def _words(value: Any, limit: int, what: str) -> str:
    """The sharer's text: a string of at most ``limit`` characters, control characters
    turned into spaces (a title is one line); anything else is a 400."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ShareError(f"{what}: must be text")
    if len(value) > limit:
        raise ShareError(f"{what}: at most {limit} characters")
    return _CONTROL_RE.sub(" ", value).strip()


def retitle(data: bytes, title: str, note: str) -> bytes:
    """A recording with the sharer's ``title`` (and ``note``: the summary and a first
    narration line, at the recording's first moment)."""
    head, sep, rest = data.partition(b"\n")
    try:
        header = decode_line(head.decode("utf-8"))
    except (FormatError, UnicodeDecodeError):
        raise ShareError("this session's recording cannot be read") from None
    if not isinstance(header, dict):
        raise ShareError("this session's recording cannot be read")
    if title:
        header["title"] = title
    lines = [json.dumps(header).encode()]
    if note:
        header["summary"] = note
        lines = [json.dumps(header).encode(),
                 json.dumps({"t": 0, "type": "say", "text": note}).encode()]
    return b"\n".join(lines) + b"\n" + rest if sep else b"\n".join(lines) + b"\n"


def _upload() -> tuple[bytes, str]:
    cap = int(current_app.config["VMEMLAB_SHARE_MAX_BYTES"])
    if request.content_length is not None and request.content_length > cap + (64 << 10):
        raise ShareError(f"larger than {cap >> 20} MiB: too large to share", 413)
    upload = request.files.get("file")
    if upload is None:
        body = bodies.json_body()
        if isinstance(body, dict) and body.get("session_recording") is True:
            title = _words(body.get("title"), MAX_TITLE, "title")
            note = _words(body.get("note"), MAX_NOTE, "note")
            data = _session_recording()
            if title or note:
                data = retitle(data, title, note)
            check_recording(data, "live recording")
            return data, "ndjson"
        raise ShareError("send a file (field 'file') or {\"session_recording\": true}")
    data = upload.stream.read(cap + 1)
    if len(data) > cap:
        raise ShareError(f"larger than {cap >> 20} MiB: too large to share", 413)
    name = _NAME_RE.sub("_", os.path.basename(upload.filename or "")) or "upload"
    ext = kind_of(data, name)
    if ext == "ndjson":
        check_recording(data, name)
    else:
        check_scenario(data, name)
    return data, ext


# ------------------------------------------------------------------------------ routes

@bp.get("/share")
def share_page() -> str:
    """Share from the browser: a file, or this session's recording with a title."""
    cap = int(current_app.config["VMEMLAB_SHARE_MAX_BYTES"])
    return render_template("share.html", max_mib=cap >> 20, max_title=MAX_TITLE,
                           max_note=MAX_NOTE)


@bp.post("/share")
def share() -> Any:
    ratelimits.hit("VMEMLAB_RATELIMIT_SHARES")
    try:
        data, ext = _upload()
        ratelimits.hit("VMEMLAB_RATELIMIT_SHARE_BYTES", len(data))
        share_id = store(data, ext)
    except ShareError as err:
        return jsonify(ok=False, error=str(err)), err.status
    return jsonify(ok=True, id=share_id, url=url_for("sharing.shared_page", share_id=share_id),
                   kind="recording" if ext == "ndjson" else "scenario")


def _scenario(share_id: str) -> Scenario:
    path, ext = find_shared(share_id)
    if ext != "yaml":
        abort(404)
    try:
        return load_scenario(path)
    except (ScenarioError, *MALFORMED):
        abort(404, description="this shared scenario cannot be read")


@bp.get("/s/<share_id>")
def shared_page(share_id: str) -> Any:
    _, ext = find_shared(share_id)
    if ext == "ndjson":
        return redirect(url_for("replay.replay", src=f"/shared/{share_id}.ndjson"))
    scenario = _scenario(share_id)
    narration = [s.params["text"] for s in scenario.steps if s.kind == "say"]
    return render_template("shared.html", scenario=scenario, narration=narration,
                           share_id=share_id)


@bp.post("/s/<share_id>/start")
def start_shared(share_id: str) -> Any:
    from webapp.replay import start_scenario

    scenario = _scenario(share_id)
    error = start_scenario(scenario)
    if error is not None:
        return error
    if scenario.goals:
        return redirect(url_for("sharing.shared_lesson", share_id=share_id, fresh=1))
    return redirect(url_for("pages.index"))


@bp.get("/s/<share_id>/lesson")
def shared_lesson(share_id: str) -> str:
    from webapp.replay import lesson_view

    return lesson_view(_scenario(share_id),
                       goals_url=url_for("sharing.shared_goals", share_id=share_id),
                       start_url=url_for("sharing.start_shared", share_id=share_id),
                       key=f"shared:{share_id}")


@bp.get("/s/<share_id>/goals")
def shared_goals(share_id: str) -> Any:
    from webapp.replay import goals_answer

    return goals_answer(_scenario(share_id))


@bp.get("/shared/<name>")
def shared_file(name: str) -> Response:
    if not name.endswith(".ndjson"):
        abort(404)
    path, ext = find_shared(name[:-len(".ndjson")])
    if ext != "ndjson":
        abort(404)
    return send_file(path, mimetype="application/x-ndjson", max_age=0)
