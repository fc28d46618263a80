"""How large a request body may be, per endpoint, streamed (chunked) bodies included.

Werkzeug enforces ``request.max_content_length`` on a body with a Content-Length *and* on a
chunked one (the server terminates the input stream and the reader stops at the cap with
413), so the cap must be set before anything touches the body -- the CSRF check reads the
form -- hence an app-wide ``before_request`` registered first:

* ``POST /api/machine/state``: a state file, ``VMEMLAB_MAX_STATE_BYTES``;
* ``POST /share`` with a file: ``VMEMLAB_SHARE_MAX_BYTES`` plus room for the form around it;
* everything else (JSON bodies, forms): ``VMEMLAB_MAX_JSON_BYTES``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

FORM_OVERHEAD = 64 << 10  # multipart boundaries, headers, the CSRF field


def body_cap() -> int:
    config = current_app.config
    if request.endpoint == "api.load_state":
        return int(config["VMEMLAB_MAX_STATE_BYTES"])
    if request.endpoint == "sharing.share" and request.mimetype == "multipart/form-data":
        return int(config["VMEMLAB_SHARE_MAX_BYTES"]) + FORM_OVERHEAD
    return int(config["VMEMLAB_MAX_JSON_BYTES"])


def init_app(app: Flask) -> None:
    @app.before_request
    def _cap_body() -> None:
        request.max_content_length = body_cap()


def body() -> bytes:
    """The whole (capped) body; 413 when it reached the cap.

    Werkzeug stops a streamed body at the cap without an error (it cannot tell a body that
    ends there from a longer one), so a body that fills the cap is refused here.
    """
    cap = request.max_content_length
    data = request.get_data(cache=True)
    if cap is not None and len(data) >= cap:
        raise RequestEntityTooLarge(f"the request body is larger than {cap >> 10} KiB")
    return data


def json_body() -> Any:
    """The JSON body (``None`` when there is none or it is not JSON); 413 when too large."""
    data = body()
    if not data or not request.is_json:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
