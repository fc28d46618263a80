"""The app's own objects, found through Flask's extension registry: one accessor each.

``create_app`` registers the session manager and this app's python-socketio server here;
views, socket handlers and helpers ask for them with :func:`sessions` and :func:`server`
(inside a request or app context), never through ``app.extensions`` keys of their own.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, current_app, request

from webapp.sessions import SessionManager
from webapp.store import Store

_SESSIONS = "vmemlab"
_SERVER = "vmemlab_server"
_STORE = "vmemlab_store"


def register(app: Flask, manager: SessionManager, server: Any, store: Store) -> None:
    app.extensions[_SESSIONS] = manager
    app.extensions[_SERVER] = server
    app.extensions[_STORE] = store


def store(app: Flask | None = None) -> Store:
    """The store the server processes share (``webapp.store``)."""
    return cast(Store, (app or current_app).extensions[_STORE])


def sessions(app: Flask | None = None) -> SessionManager:
    """The session manager of ``app`` (default: the current app)."""
    return cast(SessionManager, (app or current_app).extensions[_SESSIONS])


def server(app: Flask | None = None) -> Any:
    """This app's python-socketio server (not the module-level object's latest one)."""
    return (app or current_app).extensions[_SERVER]


def sid() -> str:
    """The Socket.IO session id of the event being handled."""
    return cast(str, getattr(request, "sid"))  # noqa: B009  (set by Flask-SocketIO)
