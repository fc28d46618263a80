"""A live server in a background thread, for end-to-end tests, benchmarks and screenshots.

Werkzeug's threaded server with the app's Socket.IO middleware (WebSocket through
simple-websocket), on a free loopback port; ``close()`` stops it and every machine.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from typing import Any

from webapp import create_app, ext
from webapp.sessions import SessionManager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``create_app(config)`` served on ``self.url`` until ``close()``."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        import logging

        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.app = create_app(config)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server",
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                    answer.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def manager(self) -> SessionManager:
        return ext.sessions(self.app)

    def close(self) -> None:
        self.server.shutdown()
        self.manager.close_all()

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
