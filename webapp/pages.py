"""HTML pages: the sandbox itself, what the model leaves out (``/about/model``), a health
check."""

from __future__ import annotations

import os

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    render_template,
    send_from_directory,
    session,
)
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from webapp import ROOT, block_states, docs_pages, ext
from webapp.sessions import new_token

bp = Blueprint("pages", __name__)

TOKEN = "vmemlab"  #: key of the session token in the signed Flask session cookie
DOCS = "vmemlab.docs"  #: app.extensions key of the rendered doc pages


@bp.record_once
def _render_docs(state: BlueprintSetupState) -> None:
    """Render docs/*.md once, when the app starts (webapp.docs_pages)."""
    state.app.extensions[DOCS] = docs_pages.load_all(os.path.join(ROOT, "docs"))


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


@bp.get("/about/<name>")
def about(name: str) -> str:
    """``/about/model``: docs/model.md, what vmemlab simplifies and which versions it
    follows; ``/about/personalities`` likewise."""
    page = current_app.extensions[DOCS].get(name)
    if page is None:
        abort(404)
    return render_template("about_model.html", page=page)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness and load of this process; ``worker`` names it (behind a proxy: which one
    answered)."""
    stats = ext.sessions().stats()
    return jsonify(status="ok", worker=current_app.config["VMEMLAB_WORKER_NAME"], **stats)


@bp.get("/favicon.ico")
def favicon() -> ResponseReturnValue:
    """Every page, also those without a ``<link rel="icon">``: browsers ask for this."""
    return send_from_directory(os.path.join(ROOT, "static"), "favicon.svg",
                               mimetype="image/svg+xml", max_age=86400)
