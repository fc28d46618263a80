"""How a server process ends: every page is told, every machine is closed, every socket drops.

One function for every way the process ends: ``vmemlab serve`` after Ctrl-C, a gunicorn
worker's SIGTERM (``deploy/gunicorn.conf.py`` calls it from its signal and exit hooks), and
interpreter exit (``atexit``, for any other WSGI server that imports ``webapp.wsgi``).
Closing a machine stops its vCPU thread and deletes its live recording; dropping the sockets
lets a graceful server finish its open WebSocket connections instead of waiting them out,
and the pages reconnect (behind nginx: to another worker, a new machine and the reason).
"""

from __future__ import annotations

import logging
import threading

from flask import Flask

from webapp import ext

log = logging.getLogger(__name__)

SHUTDOWN = ("the server is shutting down: this machine is closed; the page reconnects to a "
            "new one as soon as a server answers")

_done: set[int] = set()
_lock = threading.Lock()


def shutdown(app: Flask) -> int:
    """Close ``app``'s machines and sockets, once (later calls return 0): how many closed."""
    with _lock:
        if id(app) in _done:
            return 0
        _done.add(id(app))
    manager = ext.sessions(app)
    server = ext.server(app)
    closed = len(manager)
    if closed:
        try:
            # this process's sockets only: with a message queue a plain broadcast would
            # reach every worker's students
            server.emit("machine_closed", {"error": SHUTDOWN}, namespace="/",
                        ignore_queue=True)
        except Exception:  # a broken socket must not keep the machines alive
            log.exception("could not tell the pages that the server is shutting down")
    manager.close_all()
    # every socket dropped without Engine.IO's goodbye: the WebSocket threads end (so a
    # graceful stop does not wait them out) and the pages reconnect, as after a crash
    # (a CLOSE packet would tell Socket.IO clients not to)
    for sock in list(server.eio.sockets.values()):
        try:
            sock.close(wait=False, abort=True)
        except Exception:
            log.exception("could not close a socket")
    log.info("vmemlab: shut down, %d machine(s) closed", closed)
    return closed
