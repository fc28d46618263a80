"""The browser sandbox: Flask app factory, the shared Socket.IO object, blueprints.

``create_app(config)`` builds one app with its own ``SessionManager`` (machines per browser
session); ``socketio`` is module-level so event handlers (``webapp.sockets``) register once
and every app gets them through ``socketio.init_app``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from flask import Flask
from flask_socketio import SocketIO
from werkzeug.middleware.proxy_fix import ProxyFix

from webapp.registry import MachineRegistry
from webapp.sessions import SessionManager, default_config
from webapp.settings import DEFAULTS, Settings, from_environment
from webapp.store import open_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: ``threading`` + simple-websocket: the vCPU threads release the GIL while guest code runs.
socketio = SocketIO(async_mode="threading")

def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: ``DEFAULTS``, then ``VMEMLAB_*`` environment variables, then
    ``config`` (Flask settings too)."""
    app = Flask(__name__, static_folder=os.path.join(ROOT, "static"),
                template_folder=os.path.join(ROOT, "templates"))
    app.config.update(DEFAULTS)
    app.config["SECRET_KEY"] = os.urandom(32)
    app.config.update(from_environment())
    if config:
        app.config.update(config)
    shared_key = secret_key(app.config)
    if shared_key is not None:
        app.config["SECRET_KEY"] = shared_key
    if not app.config["VMEMLAB_WORKER_NAME"]:
        app.config["VMEMLAB_WORKER_NAME"] = f"{socket.gethostname()}:{os.getpid()}"
    settings = Settings.from_config(app.config)
    store = open_store(app.config["VMEMLAB_STORE_URI"])

    from webapp import (
        bodies,
        csrf,
        errors,
        ext,
        headers,
        ratelimits,
        sharing,
        sockets,  # noqa: F401  (registers the event handlers)
    )
    from webapp.api import bp as api_bp
    from webapp.compare_routes import bp as compare_bp
    from webapp.compare_routes import register_labs
    from webapp.pages import bp as pages_bp
    from webapp.replay import bp as replay_bp

    bodies.init_app(app)  # first: the body cap must be set before the CSRF check reads it
    csrf.init_app(app)
    headers.init_app(app)
    errors.init_app(app)
    ratelimits.init_app(app)
    app.register_blueprint(pages_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(replay_bp)
    app.register_blueprint(sharing.bp)
    app.register_blueprint(compare_bp)
    socketio.init_app(app, async_mode="threading", max_http_buffer_size=1_000_000,
                      message_queue=app.config["VMEMLAB_MESSAGE_QUEUE"])
    server = socketio.server  # this app's server, even if another app is created later
    proxies = int(app.config["VMEMLAB_TRUSTED_PROXIES"])
    if proxies > 0:  # outermost, so Socket.IO's requests see the client's address too
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies,  # type: ignore[method-assign]
                                x_host=proxies)

    def emit(event: str, data: Any, to: str) -> None:
        # a machine's room is in this process: straight to its sockets, never through the
        # message queue (that carries what crosses processes: class broadcasts)
        server.emit(event, data, to=to, namespace="/", ignore_queue=True)

    factory = app.config["VMEMLAB_DEFAULT_MACHINE"] or default_config
    registry = MachineRegistry(store, app.config["VMEMLAB_WORKER_NAME"])
    sessions = SessionManager(settings, emit, factory,
                              start_task=socketio.start_background_task, registry=registry)
    sessions.chores.append(sharing.janitor(app))  # expired shares go, even if never asked for
    ext.register(app, sessions, server, store)
    register_labs(app, sessions)  # /compare: each session's comparison lab
    from webapp import class_routes, last_save

    class_routes.init_app(app)  # /class: the teacher's view (webapp.classes)
    last_save.init_app(app)  # a reclaimed machine's last save
    return app


def secret_key(config: Any) -> str | None:
    """The session cookie's key shared by several processes: ``VMEMLAB_SECRET_KEY``, or the
    first line of ``VMEMLAB_SECRET_KEY_FILE``; None: each process makes its own."""
    path = config.get("VMEMLAB_SECRET_KEY_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            key = f.readline().strip()
        if len(key) < 16:
            raise ValueError(f"VMEMLAB_SECRET_KEY_FILE {path}: a key of 16 characters or "
                             "more is needed")
        return key
    key = config.get("VMEMLAB_SECRET_KEY")
    return str(key) if key else None


__all__ = ["DEFAULTS", "create_app", "secret_key", "socketio"]
