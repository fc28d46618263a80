"""Security headers on every response: a strict Content-Security-Policy and friends.

* ``script-src 'self'``: only this server's script files run -- no inline scripts (the page
  reads its data from JSON elements and data attributes), no ``eval``; a string that slips
  into the DOM as markup still cannot run.
* ``style-src 'self' 'unsafe-inline'``: Plotly sets inline styles on its SVG charts.
* ``frame-ancestors 'self'``: the lesson pages embed ``/`` in an iframe; nobody else may.
* ``object-src 'none'``, ``base-uri 'none'``, ``form-action 'self'``.
* ``X-Content-Type-Options: nosniff`` (an uploaded recording is never run as a script),
  ``Referrer-Policy: same-origin``.
"""

from __future__ import annotations

from flask import Flask, Response

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'self'",
    "form-action 'self'",
])

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def init_app(app: Flask) -> None:
    @app.after_request
    def _security_headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response
