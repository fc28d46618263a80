"""The WSGI entry point for a production server: ``gunicorn 'webapp.wsgi:app'``.

The app reads its settings from ``VMEMLAB_*`` environment variables (``webapp.settings``;
``SECRET_KEY`` / ``VMEMLAB_SECRET_KEY_FILE`` for a key shared by several processes). Its
machines are closed when the process ends: gunicorn calls ``webapp.lifecycle.shutdown`` from
the hooks in ``deploy/gunicorn.conf.py``, and ``atexit`` covers any other server.
Flask-SocketIO in threading mode needs one worker process with threads (``-w 1 -k gthread
--threads N``); more processes go behind a proxy with session affinity (docs/scaling.md).
"""

from __future__ import annotations

import atexit
import logging

from webapp import create_app
from webapp.lifecycle import shutdown

logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] %(message)s")
app = create_app()
atexit.register(shutdown, app)
