"""CSRF protection for every state-changing request (Flask-WTF's ``CSRFProtect``).

Every POST must carry the session's CSRF token: the page reads it from
``<meta name="csrf-token">`` and sends it as the ``X-CSRFToken`` header, HTML forms carry it
in a hidden ``csrf_token`` field, and a script asks ``GET /api/csrf-token`` (which also
starts its session cookie) and sends the header back with the cookie. A cross-site form or
fetch cannot read the token, so it cannot replace or orphan a visitor's machine.

Tokens never expire while the session lasts (``WTF_CSRF_TIME_LIMIT = None``): a workshop
page stays open for hours. Socket.IO is not a Flask route; its WebSockets are protected by
python-engineio's same-origin check instead (see ``webapp.sockets``).
"""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFProtect, generate_csrf

from webapp.pages import session_token

csrf = CSRFProtect()
bp = Blueprint("csrf", __name__)


def init_app(app: Flask) -> None:
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    csrf.init_app(app)
    app.register_blueprint(bp)


@bp.get("/api/csrf-token")
def csrf_token() -> ResponseReturnValue:
    """The token for scripts: ``{"csrf_token": ...}``, and the session cookie with it."""
    session_token()
    return jsonify(ok=True, csrf_token=generate_csrf())
