"""A reclaimed machine's last save: written just before the idle reclaim closes it, offered
to its student when they come back.

The server closes a machine nobody watched for ``VMEMLAB_IDLE_RECLAIM`` seconds. It saves it
first (the same file "save" downloads: ``webapp.actions.save``) under a name derived from the
session token (its SHA-256: the file name tells nothing), and the student's page, told that
the machine was reclaimed (``machine_lost``), offers "restore last save":
``POST /api/machine/last-save/restore`` loads it as "load" would.

Bounded: one file per session, at most ``VMEMLAB_LAST_SAVE_MAX_FILES`` and
``VMEMLAB_LAST_SAVE_MAX_TOTAL`` bytes in all (the oldest go first), each at most
``VMEMLAB_MAX_STATE_BYTES``, kept ``VMEMLAB_LAST_SAVE_TTL`` seconds. Several
processes share them when ``VMEMLAB_LAST_SAVE_DIR`` is on shared storage.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from webapp import actions, admission, errors, ext
from webapp.sessions import MachineSession, NoCookieError

log = logging.getLogger(__name__)

bp = Blueprint("last_save", __name__)
SAVES = "vmemlab_last_saves"


class LastSaves:
    def __init__(self, folder: str, *, max_files: int, ttl: float, max_bytes: int,
                 max_total: int) -> None:
        self.folder = folder
        self.max_files = max_files
        self.max_total = max_total
        self.ttl = ttl
        self.max_bytes = max_bytes
        os.makedirs(folder, exist_ok=True)

    def path(self, token: str) -> str:
        return os.path.join(self.folder, hashlib.sha256(token.encode()).hexdigest()
                            + ".vmstate")

    def keep(self, token: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            log.warning("last save of %d bytes not kept (over %d)", len(data), self.max_bytes)
            return
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path(token))  # whole or not at all, for every process
        self.prune()

    def saved_at(self, token: str) -> float | None:
        """When ``token``'s last save was written (epoch s); None: none (or expired)."""
        try:
            mtime = os.stat(self.path(token)).st_mtime
        except OSError:
            return None
        return mtime if self.ttl <= 0 or time.time() - mtime < self.ttl else None

    def forget(self, token: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path(token))

    def prune(self) -> None:
        """Expired saves go, then the oldest beyond ``max_files`` or ``max_total`` bytes."""
        entries = []
        for entry in os.scandir(self.folder):
            with contextlib.suppress(OSError):
                st = entry.stat()
                entries.append((st.st_mtime, st.st_size, entry.path))
        entries.sort(reverse=True)
        now = time.time()
        total = 0
        for i, (mtime, size, path) in enumerate(entries):
            total += size
            if (i >= self.max_files or total > self.max_total
                    or (self.ttl > 0 and now - mtime >= self.ttl)):
                with contextlib.suppress(OSError):
                    os.unlink(path)


def init_app(app: Flask) -> LastSaves:
    folder = app.config["VMEMLAB_LAST_SAVE_DIR"] or os.path.join(app.instance_path,
                                                                 "last-saves")
    saves = LastSaves(folder, max_files=int(app.config["VMEMLAB_LAST_SAVE_MAX_FILES"]),
                      ttl=float(app.config["VMEMLAB_LAST_SAVE_TTL"]),
                      max_bytes=int(app.config["VMEMLAB_MAX_STATE_BYTES"]),
                      max_total=int(app.config["VMEMLAB_LAST_SAVE_MAX_TOTAL"]))
    app.extensions[SAVES] = saves

    def save_before_reclaim(sess: MachineSession) -> None:
        with sess.lock:
            if sess.machine is not None:
                saves.keep(sess.token, actions.save(sess))

    ext.sessions(app).on_reclaim.append(save_before_reclaim)
    app.register_blueprint(bp)
    return saves


def _saves() -> LastSaves:
    saves: LastSaves = current_app.extensions[SAVES]
    return saves


@bp.get("/api/machine/last-save")
def last_save() -> ResponseReturnValue:
    """Whether this session has a last save: ``{"ok": true, "saved_at": epoch | null}``."""
    try:
        token = admission.token()
    except NoCookieError as err:
        return jsonify(ok=False, error=str(err)), 403
    return jsonify(ok=True, saved_at=_saves().saved_at(token))


@bp.post("/api/machine/last-save/restore")
def restore() -> ResponseReturnValue:
    """Load this session's last save into a new machine (as "load" does)."""
    saves = _saves()
    try:
        token = admission.token()
        if saves.saved_at(token) is None:
            return jsonify(ok=False, error="there is no last save of your machine"), 404
        with open(saves.path(token), "rb") as f:
            answer: dict[str, Any] = actions.load(ext.sessions(), token, f)
    except Exception as exc:
        refusal = errors.user_error(exc)
        if refusal is None:
            raise
        return jsonify(ok=False, error=refusal[1]), refusal[0]
    return jsonify(ok=True, **answer)
