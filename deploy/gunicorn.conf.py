"""gunicorn settings for one vmemlab worker process: ``gunicorn -c deploy/gunicorn.conf.py``.

Flask-SocketIO in threading mode (simple-websocket for WebSocket) runs under gunicorn's
``gthread`` worker, one process: its machines, its sockets and its Socket.IO rooms live in
that process (``-w 1``); a bigger class runs several of these behind nginx (docs/scaling.md).
Every WebSocket holds a thread, so ``threads`` bounds the students one process serves.

Environment: ``VMEMLAB_BIND`` (default 127.0.0.1:5000), ``VMEMLAB_THREADS`` (default 100);
the app's own settings are ``VMEMLAB_*`` variables (SECURITY.md).

On SIGTERM every page is told, every machine closed and every socket dropped at once (so the
graceful stop does not wait out open WebSockets), and once more on the way out.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

bind = os.environ.get("VMEMLAB_BIND", "127.0.0.1:5000")
workers = 1
worker_class = "gthread"
threads = int(os.environ.get("VMEMLAB_THREADS", "100"))
wsgi_app = "webapp.wsgi:app"
graceful_timeout = 20
timeout = 60
keepalive = 5
accesslog = os.environ.get("VMEMLAB_ACCESS_LOG") or None


def _close_machines() -> None:
    from webapp import wsgi
    from webapp.lifecycle import shutdown

    shutdown(wsgi.app)


def post_worker_init(worker: Any) -> None:
    """Chain our SIGTERM handler before the worker's own (graceful stop)."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        threading.Thread(target=_close_machines, name="vmemlab-shutdown", daemon=True).start()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def worker_exit(server: Any, worker: Any) -> None:
    _close_machines()
