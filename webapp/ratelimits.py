"""Per-client rate limits: how often one address may start machines, share files, and so on.

Flask-Limiter keeps the counters (``VMEMLAB_RATELIMIT_STORAGE_URI``: ``memory://`` in this
process now; a ``redis://`` URI shares them between several server processes). The limits
are checked where the work happens rather than per route, because the same work comes in
through HTTP routes and Socket.IO events alike; a client over its limit gets
``429 Too Many Requests`` (an HTTP answer, or an ``{"ok": false}`` socket acknowledgement)
saying which limit and when to come back.

The client is its remote address. A class behind one NAT address shares one set of
counters, so the defaults leave room for a full room (see SECURITY.md). Behind a reverse
proxy every request comes from the proxy: ``VMEMLAB_TRUSTED_PROXIES`` (the number of
proxies in front) makes the app take the client's address from ``X-Forwarded-For``
(Werkzeug's ``ProxyFix``), and only then: a client could otherwise claim any address.
"""

from __future__ import annotations

import time

from flask import Flask, current_app, request
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many
from werkzeug.exceptions import TooManyRequests

#: config key -> what the limit counts (shown in the refusal)
LIMITS = {
    "VMEMLAB_RATELIMIT_MACHINES": "new machines",
    "VMEMLAB_RATELIMIT_SHARES": "shared files",
    "VMEMLAB_RATELIMIT_SHARE_BYTES": "shared bytes",
    "VMEMLAB_RATELIMIT_CLASS_GUESSES": "wrong class codes or tokens",
}


class RateLimited(TooManyRequests):
    """This client is over one of its limits; ``retry_after`` is in seconds."""

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after


def init_app(app: Flask) -> Limiter:
    # counters live in the shared store unless told otherwise: one set for all processes
    uri = app.config["VMEMLAB_RATELIMIT_STORAGE_URI"] or app.config["VMEMLAB_STORE_URI"]
    limiter = Limiter(_client, app=app, storage_uri=uri,
                      strategy="moving-window", enabled=bool(app.config["VMEMLAB_RATELIMITS"]))
    app.extensions["vmemlab_limiter"] = limiter
    return limiter


def _client() -> str:
    return request.remote_addr or "unknown"


def _items(key: str) -> list[RateLimitItem]:
    spec = current_app.config.get(key)
    return list(parse_many(spec)) if spec else []


def hit(key: str, cost: int = 1) -> None:
    """Count ``cost`` against this client's ``key`` limits; ``RateLimited`` when over."""
    limiter: Limiter = current_app.extensions["vmemlab_limiter"]
    if not limiter.enabled or cost <= 0:
        return
    client = _client()
    for item in _items(key):
        if not limiter.limiter.hit(item, key, client, cost=cost):
            stats = limiter.limiter.get_window_stats(item, key, client)
            wait = max(1, int(stats.reset_time - time.time() + 0.999))
            raise RateLimited(
                f"too many {LIMITS.get(key, key)} from your address (limit: {item}); "
                f"try again in {wait} s", wait)
