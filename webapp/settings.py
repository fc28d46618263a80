"""Every ``VMEMLAB_*`` setting of the web app, with its default, in one place.

``Settings`` holds what the session manager uses: each field is the app config key
``VMEMLAB_<FIELD>`` (``emit_hz`` is ``VMEMLAB_EMIT_HZ``), so its default is written once, here.
``DEFAULTS`` adds the settings other modules read from ``app.config`` (sharing, rate limits,
body caps). Precedence: ``DEFAULTS``, then ``VMEMLAB_*`` environment variables, then the
config ``create_app`` is given (``vmemlab serve`` flags). SECURITY.md documents the limits.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emulator.config import GiB, MiB


@dataclass
class Settings:
    """The session manager's settings; field ``x`` is config key ``VMEMLAB_X``."""

    max_machines: int = 40
    max_machine_memory: int = 8 * GiB  # boot RAM + devices of one machine
    max_blocks: int = 16_384  # device blocks of one device
    idle_pause: float = 120.0  # seconds without a connected browser before pausing
    idle_reclaim: float = 900.0  # ... before closing the machine
    emit_hz: float = 30.0  # at most this many batches per second per room
    view_interval: float = 0.25  # at most this often a fresh snapshot after events
    sample_interval: float = 1.0  # a chart sample (and a host residency scan) this often
    command_timeout: float = 30.0
    snapshot_timeout: float = 5.0
    max_recording_bytes: int = 32 * MiB  # live recording per session; 0: none
    recording_dir: str | None = None  # where the live recordings go (None: the temp dir)
    max_resident: int = 8 * GiB  # resident guest memory of all machines together (0: no cap)
    max_machine_resident: int = 512 * MiB  # resident guest memory of one machine (0: no cap)
    chore_interval: float = 60.0  # seconds between the pump's chores (share expiry, ...)

    @staticmethod
    def key(name: str) -> str:
        return "VMEMLAB_" + name.upper()

    @classmethod
    def config_defaults(cls) -> dict[str, Any]:
        return {cls.key(f.name): f.default for f in dataclasses.fields(cls)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """The settings in an app config, each converted to its field's type."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            value = config.get(cls.key(f.name), f.default)
            if value is not None and isinstance(f.default, (int, float)):
                value = type(f.default)(value)
            values[f.name] = value
        return cls(**values)


DEFAULTS: dict[str, Any] = {
    **Settings.config_defaults(),
    "VMEMLAB_DEFAULT_MACHINE": None,  # a MachineConfig factory; None: two nodes, 2 x 1 GiB
    "VMEMLAB_SHARE_DIR": None,  # shared files (/share); None: <instance path>/shared
    "VMEMLAB_SHARE_MAX_BYTES": 8 << 20,  # largest upload to /share
    "VMEMLAB_SHARE_MAX_TOTAL": 1 << 30,  # all shared files together
    "VMEMLAB_SHARE_TTL": 3 * 86400.0,  # seconds a shared file lives (0: forever)
    "VMEMLAB_MAX_STATE_BYTES": 512 << 20,  # largest state file that can be loaded
    "VMEMLAB_MAX_JSON_BYTES": 64 << 10,  # largest JSON (or form) body of any other request
    # per-client rate limits (limits' syntax, ';' between several); see webapp.ratelimits
    "VMEMLAB_RATELIMITS": True,
    "VMEMLAB_RATELIMIT_STORAGE_URI": None,  # None: VMEMLAB_STORE_URI
    "VMEMLAB_RATELIMIT_MACHINES": "60 per minute;600 per hour",
    "VMEMLAB_RATELIMIT_SHARES": "20 per minute;120 per hour",
    "VMEMLAB_RATELIMIT_SHARE_BYTES": f"{128 << 20} per hour",
    # several server processes (docs/scaling.md): what they share and how they tell apart
    "VMEMLAB_SECRET_KEY": None,  # the session cookie's key; None: a random one per process
    "VMEMLAB_SECRET_KEY_FILE": None,  # ... or read from this file (first line)
    "VMEMLAB_MESSAGE_QUEUE": None,  # e.g. redis://host:6379/0: Socket.IO across processes
    "VMEMLAB_STORE_URI": "memory://",  # shared state (share index, machine registry)
    "VMEMLAB_WORKER_NAME": None,  # this process in /healthz; None: host:pid
    "VMEMLAB_TRUSTED_PROXIES": 0,  # reverse proxies whose X-Forwarded-* headers count
    # the teacher's view (webapp.classes): who may open a class, how many, how big
    "VMEMLAB_CLASS_TOKEN": None,  # required to create a class (/class/new); None: anyone
    "VMEMLAB_MAX_CLASSES": 20,  # classes the server (all processes) holds at once
    "VMEMLAB_MAX_CLASS_STUDENTS": 60,  # students of one class
    "VMEMLAB_CLASS_TTL": 12 * 3600.0,  # seconds a class lives
    "VMEMLAB_CLASS_INTERVAL": 1.0,  # seconds between two publications of a student's machine
    # wrong join codes and class tokens per client: enumeration needs ~1e7 guesses
    "VMEMLAB_RATELIMIT_CLASS_GUESSES": "20 per minute;100 per hour",
    # a machine closed after its idle time is saved first, so its student can restore it
    "VMEMLAB_LAST_SAVE_DIR": None,  # None: <instance path>/last-saves (shared storage: all)
    "VMEMLAB_LAST_SAVE_MAX_FILES": 200,  # the oldest go first
    "VMEMLAB_LAST_SAVE_TTL": 86400.0,  # seconds a last save is kept
    "VMEMLAB_LAST_SAVE_MAX_TOTAL": 2 * 1024**3,  # bytes of all last saves (the oldest go)
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
