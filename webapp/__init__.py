"""The browser sandbox: Flask app factory, the shared Socket.IO object, blueprints.

``create_app(config)`` builds one app with its own ``SessionManager`` (machines per browser
session); ``socketio`` is module-level so event handlers (``webapp.sockets``) register once
and every app gets them through ``socketio.init_app``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_socketio import SocketIO

from webapp.sessions import SessionManager, Settings, default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: ``threading`` + simple-websocket: the vCPU threads release the GIL while guest code runs.
socketio = SocketIO(async_mode="threading")

DEFAULTS: dict[str, Any] = {
    "VMEMLAB_MAX_MACHINES": 40,
    "VMEMLAB_MAX_MACHINE_MEMORY": 8 << 30,
    "VMEMLAB_MAX_BLOCKS": 16_384,
    "VMEMLAB_IDLE_PAUSE": 120.0,
    "VMEMLAB_IDLE_RECLAIM": 900.0,
    "VMEMLAB_EMIT_HZ": 30.0,
    "VMEMLAB_VIEW_INTERVAL": 0.25,
    "VMEMLAB_SAMPLE_INTERVAL": 1.0,
    "VMEMLAB_COMMAND_TIMEOUT": 30.0,
    "VMEMLAB_DEFAULT_MACHINE": None,  # a MachineConfig factory; None: two nodes, 2 x 1 GiB
    "VMEMLAB_MAX_RECORDING_BYTES": 32 << 20,  # live recording per session (0: none)
    "VMEMLAB_RECORDING_DIR": None,  # where live recordings go; None: the temp dir
    "VMEMLAB_SHARE_DIR": None,  # shared files (/share); None: <instance path>/shared
    "VMEMLAB_SHARE_MAX_BYTES": 8 << 20,  # largest upload to /share
    "VMEMLAB_SHARE_MAX_TOTAL": 1 << 30,  # all shared files together
    "VMEMLAB_SHARE_TTL": 3 * 86400.0,  # seconds a shared file lives (0: forever)
    "VMEMLAB_MAX_STATE_BYTES": 512 << 20,  # largest state file that can be loaded
    "VMEMLAB_MAX_JSON_BYTES": 64 << 10,  # largest JSON (or form) body of any other request
    "VMEMLAB_MAX_RESIDENT": 8 << 30,  # resident guest memory of all machines (0: no cap)
    # per-client rate limits (limits' syntax, ';' between several); see webapp.ratelimits
    "VMEMLAB_RATELIMITS": True,
    "VMEMLAB_RATELIMIT_STORAGE_URI": "memory://",
    "VMEMLAB_RATELIMIT_MACHINES": "60 per minute;600 per hour",
    "VMEMLAB_RATELIMIT_SHARES": "20 per minute;120 per hour",
    "VMEMLAB_RATELIMIT_SHARE_BYTES": f"{128 << 20} per hour",
    "MAX_CONTENT_LENGTH": 64 << 10,  # Flask's own cap; webapp.bodies sets it per endpoint
    "SESSION_COOKIE_SAMESITE": "Lax",
}


def from_environment(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``VMEMLAB_*`` settings from environment variables, typed like their defaults."""
    out: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        if not key.startswith("VMEMLAB_") or key not in environ or callable(default):
            continue
        text = environ[key]
        if isinstance(default, bool):
            out[key] = text.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            out[key] = int(text, 0)
        elif isinstance(default, float):
            out[key] = float(text)
        elif key != "VMEMLAB_DEFAULT_MACHINE":
            out[key] = text or None
    return out


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
    settings = Settings(
        max_machines=int(app.config["VMEMLAB_MAX_MACHINES"]),
        max_memory=int(app.config["VMEMLAB_MAX_MACHINE_MEMORY"]),
        max_blocks=int(app.config["VMEMLAB_MAX_BLOCKS"]),
        idle_pause=float(app.config["VMEMLAB_IDLE_PAUSE"]),
        idle_reclaim=float(app.config["VMEMLAB_IDLE_RECLAIM"]),
        emit_hz=float(app.config["VMEMLAB_EMIT_HZ"]),
        view_interval=float(app.config["VMEMLAB_VIEW_INTERVAL"]),
        sample_interval=float(app.config["VMEMLAB_SAMPLE_INTERVAL"]),
        command_timeout=float(app.config["VMEMLAB_COMMAND_TIMEOUT"]),
        max_recording_bytes=int(app.config["VMEMLAB_MAX_RECORDING_BYTES"]),
        recording_dir=app.config["VMEMLAB_RECORDING_DIR"],
        max_resident=int(app.config["VMEMLAB_MAX_RESIDENT"]),
    )

    from webapp import (
        bodies,
        csrf,
        errors,
        headers,
        ratelimits,
        sharing,
        sockets,  # noqa: F401  (registers the event handlers)
    )
    from webapp.api import bp as api_bp
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
    socketio.init_app(app, async_mode="threading", max_http_buffer_size=1_000_000)
    server = socketio.server  # this app's server, even if another app is created later

    def emit(event: str, data: Any, to: str) -> None:
        server.emit(event, data, to=to, namespace="/")

    app.extensions["vmemlab_server"] = server
    factory = app.config["VMEMLAB_DEFAULT_MACHINE"] or default_config
    sessions = SessionManager(settings, emit, factory)
    app.extensions["vmemlab"] = sessions
    sessions.chores.append(sharing.janitor(app))  # expired shares go, even if never asked for
    return app


def manager(app: Flask) -> SessionManager:
    return app.extensions["vmemlab"]
