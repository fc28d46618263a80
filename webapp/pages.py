"""HTML pages: the sandbox itself and a health check."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, session
from flask.typing import ResponseReturnValue

from webapp import ext
from webapp.sessions import new_token
from webapp.view_model import STATE_NAMES

bp = Blueprint("pages", __name__)

TOKEN = "vmemlab"  #: key of the session token in the signed Flask session cookie


def session_token(create: bool = True) -> str | None:
    """This browser's token (from the signed cookie), made on first visit."""
    token = session.get(TOKEN)
    if not isinstance(token, str) and create:
        token = new_token()
        session[TOKEN] = token
        session.permanent = True
    return token if isinstance(token, str) else None


@bp.get("/")
def index() -> str:
    session_token()
    return render_template("index.html", states=STATE_NAMES)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness and load of this process; ``worker`` names it (behind a proxy: which one
    answered)."""
    stats = ext.sessions().stats()
    return jsonify(status="ok", worker=current_app.config["VMEMLAB_WORKER_NAME"], **stats)
