"""``/compare``: the comparison lab's page and JSON routes (``webapp.compare_lab``).

``GET /compare`` is the page; ``GET /api/compare`` the session's lab (``{"lab": null}``
before one is started); ``POST /api/compare`` starts one (``{"mechanisms": [...],
"online": "online"|"online_movable"}``), ``POST /api/compare/action`` runs an action on all
its machines (``{"action": "give-back"}``), ``POST /api/compare/stop`` closes it. Like every
route: the session cookie is required, POSTs need the CSRF token, bodies are capped, and a
refusal is a 4xx with ``{"ok": false, "error"}``. New machines pass the machine rate limit
and the memory budget.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, Flask, current_app, jsonify, render_template
from flask.typing import ResponseReturnValue

from control.mechanisms import LabSize, make, mechanisms
from webapp import admission, bodies, errors, ratelimits
from webapp.compare_lab import ACTIONS, MAX_MECHANISMS, ONLINE, CompareLabs
from webapp.compare_view import NOTES
from webapp.inputs import InputError
from webapp.pages import session_token
from webapp.sessions import SessionManager

bp = Blueprint("compare", __name__)
LABS = "vmemlab_compare"  #: the app extension holding the CompareLabs
MAX_NAME = 32


def register_labs(app: Flask, sessions: SessionManager) -> CompareLabs:
    """Make the app's lab registry and tie it to the sessions' limits and housekeeping."""
    settings = sessions.settings
    labs = CompareLabs(max_machines=lambda: settings.max_machines,
                       in_use=lambda: len(sessions),
                       check_budget=lambda growth: sessions.check_budget(growth),
                       idle_reclaim=settings.idle_reclaim)
    sessions.other_machines = labs.machines
    sessions.other_resident = labs.resident
    sessions.chores.append(labs.reap)
    sessions.on_close.append(labs.close_all)
    app.extensions[LABS] = labs
    return labs


def labs() -> CompareLabs:
    return cast(CompareLabs, current_app.extensions[LABS])


def _catalogue() -> list[dict[str, Any]]:
    size = LabSize()
    out = []
    for name in mechanisms():
        mech = make(name, size)
        out.append({"name": name, "title": mech.title, "kind": mech.kind,
                    "note": NOTES.get(name, "")})
    return out


def _answer(fn: Any) -> ResponseReturnValue:
    try:
        return jsonify(ok=True, **fn()), 200
    except Exception as exc:
        refusal = errors.user_error(exc)
        if refusal is None:
            raise
        return jsonify(ok=False, error=refusal[1]), refusal[0]


def _payload() -> dict[str, Any]:
    data = bodies.json_body()
    if not isinstance(data, dict):
        raise InputError("the body must be a JSON object")
    return data


@bp.get("/compare")
def page() -> str:
    session_token()
    return render_template("compare.html", catalogue=_catalogue(), max_mechanisms=MAX_MECHANISMS,
                           actions=[(k, t) for k, (_r, t) in ACTIONS.items()])


@bp.get("/api/compare")
def state() -> ResponseReturnValue:
    def get() -> dict[str, Any]:
        lab = labs().get(admission.token())
        return {"lab": lab.state() if lab is not None else None, "catalogue": _catalogue()}
    return _answer(get)


@bp.post("/api/compare")
def start() -> ResponseReturnValue:
    def go() -> dict[str, Any]:
        token = admission.token()
        data = _payload()
        names = data.get("mechanisms")
        if not isinstance(names, list) or not all(
                isinstance(n, str) and len(n) <= MAX_NAME for n in names) or len(names) > 8:
            raise InputError("mechanisms: expected a list of names")
        online = data.get("online", "online")
        if online not in ONLINE:
            raise InputError(f"online: expected one of {', '.join(ONLINE)}")
        ratelimits.hit("VMEMLAB_RATELIMIT_MACHINES", cost=max(1, len(names)))
        lab = labs().start(token, list(names), str(online))
        return {"lab": lab.state()}
    return _answer(go)


@bp.post("/api/compare/action")
def action() -> ResponseReturnValue:
    def go() -> dict[str, Any]:
        lab = labs().get(admission.token())
        if lab is None:
            raise InputError("start a comparison first (POST /api/compare)")
        name = _payload().get("action")
        if not isinstance(name, str) or name not in ACTIONS:
            raise InputError(f"action: expected one of {', '.join(ACTIONS)}")
        lab.run(name)
        return {"started": name}
    return _answer(go)


@bp.post("/api/compare/stop")
def stop() -> ResponseReturnValue:
    return _answer(lambda: {"stopped": labs().stop(admission.token()) is not None})
