"""Socket.IO events: the page's live channel.

Server → client: ``keyframe`` (everything, on join and after a machine is replaced),
``batch`` (engine events of one tick), ``view`` (block codes, config space, chart sample after
changes), ``machine_closed`` (the machine stopped under the page). Client → server events
all answer through the Socket.IO acknowledgement with ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``: bad input never raises, never returns a traceback, and
never stops the machine.

A socket without the session cookie is refused (it would get a machine of its own each
time). Cross-site pages cannot open a socket at all: python-engineio accepts only the
server's own origin (``cors_allowed_origins`` left at its same-origin default). Events a
client names ``connect`` or ``disconnect`` would reach the server's own lifecycle handlers;
they are refused.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import session
from flask_socketio import ConnectionRefusedError
from werkzeug.exceptions import HTTPException

from webapp import actions, admission, errors, ext, request_actions, socketio
from webapp.inputs import InputError
from webapp.pages import TOKEN
from webapp.sessions import NO_COOKIE, MachineSession

log = logging.getLogger(__name__)


def _token() -> str:
    return admission.token()


def _session() -> MachineSession:
    sess = admission.session()
    sess.last_seen = time.monotonic()
    return sess


def _forged_lifecycle_event() -> bool:
    """True when a *client* sent an event named ``connect``/``disconnect``.

    python-socketio runs the real handlers while the socket is still connecting or already
    disconnecting, when it does not count as connected; a client's events are dispatched
    only while it does.
    """
    return bool(ext.server().manager.is_connected(ext.sid(), "/"))


RESERVED = {"ok": False, "error": "'connect' and 'disconnect' are reserved event names"}


def command(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Wrap a handler: validate, run, answer ``{"ok": ...}``; never let an exception out."""

    @functools.wraps(fn)
    def wrapper(data: Any = None, *extra: Any) -> dict[str, Any]:
        try:
            return {"ok": True, **fn(data)}
        except Exception as exc:
            refusal = errors.user_error(exc)
            if refusal is not None:
                return {"ok": False, "error": refusal[1], "status": refusal[0]}
            log.exception("socket event %s failed", fn.__name__)  # a bug: one line in the page
            return {"ok": False, "error": f"internal error ({type(exc).__name__}); "
                                          "the machine keeps running"}

    return wrapper


@socketio.on("connect")
def on_connect(auth: Any = None) -> dict[str, Any] | None:
    if _forged_lifecycle_event():
        return RESERVED
    token = session.get(TOKEN)
    if not isinstance(token, str):
        raise ConnectionRefusedError(NO_COOKIE)
    try:
        admission.session()  # admitted (rate limit, memory budget) if it is new
        sess = ext.sessions().connect(token, ext.sid())
    except (InputError, HTTPException) as exc:
        text = exc.description if isinstance(exc, HTTPException) else str(exc)
        ext.server().emit("server_error", {"error": text}, to=ext.sid())
        return None
    ext.server().enter_room(ext.sid(), sess.room, namespace="/")
    if sess.why_new:  # a new machine where the student had one: say why, once
        ext.server().emit("server_error", {"error": sess.why_new, "kind": "machine_lost"},
                          to=ext.sid(), namespace="/", ignore_queue=True)
        sess.why_new = None
    return None


@socketio.on("disconnect")
def on_disconnect(reason: Any = None) -> dict[str, Any] | None:
    if _forged_lifecycle_event():
        return RESERVED
    token = session.get(TOKEN)
    if isinstance(token, str):
        ext.sessions().disconnect(token, ext.sid())
    return None


@socketio.on("ping_vmem")
@command
def on_ping(data: Any) -> dict[str, Any]:
    return {"t": time.time()}


@socketio.on("resync")
@command
def on_resync(data: Any) -> dict[str, Any]:
    _session().want_keyframe(ext.sid())
    return {}


@socketio.on("set_requested_size")
@command
def on_set_requested_size(data: Any) -> dict[str, Any]:
    return actions.set_requested_size(_session(), data)


@socketio.on("guest")
@command
def on_guest(data: Any) -> dict[str, Any]:
    return actions.guest_action(_session(), data, ext.sessions().settings.command_timeout)


@socketio.on("balloon")
@command
def on_balloon(data: Any) -> dict[str, Any]:
    return actions.balloon(_session(), data)


@socketio.on("reboot")
@command
def on_reboot(data: Any) -> dict[str, Any]:
    return actions.reboot(_session(), data)


@socketio.on("run")
@command
def on_run(data: Any) -> dict[str, Any]:
    return actions.run_control(_session(), data)


@socketio.on("speed")
@command
def on_speed(data: Any) -> dict[str, Any]:
    return actions.speed(_session(), data)


@socketio.on("pace")
@command
def on_pace(data: Any) -> dict[str, Any]:
    return actions.pace(_session(), data)


@socketio.on("hmp")
@command
def on_hmp(data: Any) -> dict[str, Any]:
    return actions.hmp(_session(), data)


@socketio.on("block_info")
@command
def on_block_info(data: Any) -> dict[str, Any]:
    return actions.block_info(_session(), data)


@socketio.on("machine_info")
@command
def on_machine_info(data: Any) -> dict[str, Any]:
    return actions.machine_info(_session())


@socketio.on("new_machine")
@command
def on_new_machine(data: Any) -> dict[str, Any]:
    return actions.new_machine(ext.sessions(), _token(), data)


@socketio.on("rfc_shrink_on_reboot")
@command
def on_rfc(data: Any) -> dict[str, Any]:
    return actions.toggle_rfc(ext.sessions(), _token(), data)


@socketio.on("guest_request")
@command
def on_guest_request(data: Any) -> dict[str, Any]:
    """The presenter's answer to a held guest request, or a new policy (docs/extensions.md)."""
    data = data if isinstance(data, dict) else {}
    if data.get("pending") is True:
        return request_actions.pending(_session())
    if "policy" in data:
        return request_actions.policy(_session(), data)
    return request_actions.answer(_session(), data)


@socketio.on("*")
def on_unknown(event: str, data: Any = None) -> dict[str, Any]:
    return {"ok": False, "error": f"unknown event '{str(event)[:40]}'"}


@socketio.on_error_default
def on_error(exc: BaseException) -> dict[str, Any]:
    log.exception("unhandled socket error")
    return {"ok": False, "error": "internal error; the machine keeps running"}
