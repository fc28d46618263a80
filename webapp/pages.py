"""HTML pages: the sandbox itself and a health check."""

from __future__ import annotations

from flask import Blueprint, jsonify, render_template, session
from flask.typing import ResponseReturnValue

from webapp import block_states, ext
from webapp.sessions import new_token

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


@bp.app_context_processor
def _page_data() -> dict[str, object]:
    """Every template can render the block-state table (``templates/block_states.html``)."""
    return {"block_states": block_states.page_data()}


@bp.get("/")
def index() -> str:
    session_token()
    return render_template("index.html")


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    stats = ext.sessions().stats()
    return jsonify(status="ok", **stats)
