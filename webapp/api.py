"""The JSON API: the same actions as the page's socket events, for scripts and tests.

Every route works on the caller's own machine (found through the signed session cookie) and
answers JSON; bad input gives ``400 {"error": ...}``, never a traceback. A request without
the cookie gets ``403`` and no machine; every POST needs the CSRF token
(``GET /api/csrf-token``, sent back as the ``X-CSRFToken`` header; see SECURITY.md). JSON
bodies are at most ``VMEMLAB_MAX_JSON_BYTES``, a state file at most
``VMEMLAB_MAX_STATE_BYTES``, streamed (chunked) bodies included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from webapp import actions, admission, bodies, errors, ext
from webapp.inputs import InputError
from webapp.sessions import MachineSession

bp = Blueprint("api", __name__, url_prefix="/api")
log = logging.getLogger(__name__)


def session_token_or_none() -> str | None:
    from webapp.pages import session_token

    return session_token(create=False)


def _token() -> str:
    return admission.token()


def _session() -> MachineSession:
    return admission.session()


def _body() -> Any:
    if not request.is_json:
        # a form was parsed already (the CSRF check reads forms); anything else is no JSON
        if request.content_length or request.form or request.files or bodies.body():
            raise InputError("the body must be JSON")
        return {}
    if not bodies.body():
        return {}
    data = bodies.json_body()
    if data is None:
        raise InputError("the body must be JSON")
    return data


def _answer(fn: Callable[[], dict[str, Any]]) -> ResponseReturnValue:
    """``200 {"ok": true, ...}``, or the refusal's status with ``{"ok": false, "error"}``;
    anything else is a bug, for the blueprint's error handler."""
    try:
        return jsonify(ok=True, **fn()), 200
    except Exception as exc:
        refusal = errors.user_error(exc)
        if refusal is None:
            raise
        status, message = refusal
        return jsonify(ok=False, error=message), status


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> ResponseReturnValue:
    if isinstance(exc, HTTPException):
        return errors.http_error(exc)
    log.exception("API request failed")
    return jsonify(ok=False, error=f"internal error ({type(exc).__name__})"), 500


@bp.get("/machine")
def machine() -> ResponseReturnValue:
    return _answer(lambda: actions.machine_info(_session()))


@bp.post("/machine")
def new_machine() -> ResponseReturnValue:
    return _answer(lambda: actions.new_machine(ext.sessions(), _token(), _body()))


@bp.get("/machine/status")
def status() -> ResponseReturnValue:
    return _answer(lambda: actions.status(_session()))


@bp.get("/machine/memory-devices")
def memory_devices() -> ResponseReturnValue:
    return _answer(lambda: {"return": actions.machine_info(_session())["memory_devices"]})


@bp.post("/machine/requested-size")
def requested_size() -> ResponseReturnValue:
    return _answer(lambda: actions.set_requested_size(_session(), _body()))


@bp.post("/machine/guest")
def guest() -> ResponseReturnValue:
    return _answer(lambda: actions.guest_action(
        _session(), _body(), ext.sessions().settings.command_timeout))


@bp.post("/machine/reboot")
def reboot() -> ResponseReturnValue:
    return _answer(lambda: actions.reboot(_session(), _body()))


@bp.post("/machine/run")
def run() -> ResponseReturnValue:
    return _answer(lambda: actions.run_control(_session(), _body()))


@bp.post("/machine/pace")
def pace() -> ResponseReturnValue:
    return _answer(lambda: actions.pace(_session(), _body()))


@bp.post("/machine/hmp")
def hmp() -> ResponseReturnValue:
    return _answer(lambda: actions.hmp(_session(), _body()))


@bp.get("/machine/block")
def block() -> ResponseReturnValue:
    args = {"device": request.args.get("device"), "block": request.args.get("block")}
    return _answer(lambda: actions.block_info(_session(), args))


@bp.get("/machine/state")
def save_state() -> ResponseReturnValue:
    try:
        data = actions.save(_session())
    except Exception as exc:
        refusal = errors.user_error(exc)
        if refusal is None:
            raise
        return jsonify(ok=False, error=refusal[1]), refusal[0]
    name = time.strftime("vmemlab-%Y%m%d-%H%M%S.vmstate")
    return Response(data, mimetype="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/machine/recording")
def live_recording() -> ResponseReturnValue:
    """This session's live recording (NDJSON, see scenarios.recording), up to now."""
    sess = ext.sessions().get(session_token_or_none())
    current = sess.recording_now() if sess is not None else None
    if current is None:
        return jsonify(ok=False, error="this session has no recording"), 404
    f, size = current

    def chunks() -> Iterator[bytes]:
        with f:
            left = size
            while left > 0:
                data = f.read(min(left, 1 << 16))
                if not data:
                    break
                left -= len(data)
                yield data

    name = time.strftime("vmemlab-live-%Y%m%d-%H%M%S.ndjson")
    return Response(chunks(), mimetype="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Content-Length": str(size), "Cache-Control": "no-store"})


@bp.post("/machine/state")
def load_state() -> ResponseReturnValue:
    """A state file: a form upload (field ``file``) or the raw body, streamed, never whole
    in memory (a form upload is spooled to a temporary file by Werkzeug); the size cap is
    set for this endpoint in ``webapp.bodies``."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            return jsonify(ok=False, error="send the state file in the field 'file'"), 400
        stream: IO[bytes] = upload.stream
    else:
        stream = request.stream
    return _answer(lambda: actions.load(ext.sessions(), _token(), stream))


@bp.get("/config/default")
def default_config() -> ResponseReturnValue:
    from webapp.inputs import config_to_form

    return jsonify(ok=True, config=config_to_form(ext.sessions().config_factory()))
