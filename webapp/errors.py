"""App-wide error answers: a clear 4xx for bad requests, 500 only for a real bug.

Every refusal (404, 413, 429, a missing CSRF token, ...) is answered as JSON for the API and
the upload routes and as a short HTML page for pages. Any other exception is a bug: it is
logged once, with its traceback, and answered 500 without one.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from control import ControlError, ErrorKind
from webapp.inputs import InputError
from webapp.ratelimits import RateLimited
from webapp.sessions import LimitError, NoCookieError

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/share", "/shared/")


#: HTTP status for each kind of control error (the text is the control layer's, QEMU's)
STATUS = {
    ErrorKind.INVALID: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.NOT_ACTIVE: 409,  # the machine has no such device (QEMU: no balloon)
    ErrorKind.BUSY: 409,
    ErrorKind.REFUSED: 409,
    ErrorKind.FAILED: 422,
    ErrorKind.EXHAUSTED: 429,
}


def user_error(exc: BaseException) -> tuple[int, str] | None:
    """``(status, message)`` for a refusal the user should see; None for a bug.

    Only the types raised on purpose count: a ``KeyError`` or ``ValueError`` from our own
    code is a bug and must not be shown as the user's mistake.
    """
    if isinstance(exc, ControlError):
        return STATUS[exc.kind], exc.message
    if isinstance(exc, NoCookieError):
        return 403, str(exc)
    if isinstance(exc, LimitError):
        return exc.status, str(exc)
    if isinstance(exc, InputError):
        return 400, str(exc) or "bad request"
    if isinstance(exc, HTTPException):
        return exc.code or 400, exc.description or exc.name
    return None


def wants_json() -> bool:
    path = request.path
    if path.startswith(JSON_PREFIXES) or path.endswith("/goals"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.is_json or best == "application/json"


def answer(code: int, message: str) -> Response:
    if wants_json():
        response = jsonify(ok=False, error=message)
    else:
        response = Response(render_template("error.html", code=code, message=message),
                            mimetype="text/html")
    response.status_code = code
    return response


def http_error(exc: HTTPException) -> Response:
    code = exc.code or 400
    response = answer(code, exc.description or exc.name)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, http_error)

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> Response:
        log.exception("request %s %s failed", request.method, request.path)
        return answer(500, f"internal error ({type(exc).__name__}); the server keeps running")
