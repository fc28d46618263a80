"""Which process runs each session's machine, in the shared store: so a student is told why
a new machine appears instead of theirs.

A machine that is opened is recorded under its session token with this process's name; one
the server closes after its idle time is recorded as reclaimed. When a session next gets a
machine, the record says what became of the last one: another process ran it (that process
went away: the proxy sent the student elsewhere), or it was closed while nobody watched.
"""

from __future__ import annotations

import json
import logging
import os
import time

from webapp.store import Store

log = logging.getLogger(__name__)

KEEP = 7 * 86400.0  # seconds a record outlives its machine


class MachineRegistry:
    def __init__(self, store: Store, worker: str) -> None:
        self.store = store
        self.worker = worker
        #: this very process: a worker restarted under the same name is another one
        self.process = f"{worker}/{os.getpid()}/{time.time_ns()}"

    def opened(self, token: str) -> None:
        self._put(token, {"worker": self.worker, "process": self.process})

    def reclaimed(self, token: str, idle: float) -> None:
        self._put(token, {"worker": self.worker, "process": self.process,
                          "reclaimed_after": idle})

    def why_new(self, token: str) -> str | None:
        """Why ``token`` gets a new machine when it had one (None: its first, or replaced).
        A store that cannot be reached costs the notice, never the machine."""
        try:
            raw = self.store.get(self._key(token))
        except Exception:
            log.exception("the shared store cannot be read")
            return None
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            worker, process = str(record["worker"]), str(record["process"])
        except (ValueError, KeyError, TypeError):
            return None
        idle = record.get("reclaimed_after")
        if isinstance(idle, (int, float)):
            away = f"{idle / 60:.0f} minutes" if idle >= 120 else f"{idle:.0f} s"
            return (f"your last machine was closed after {away} without a browser on it "
                    "(the server's idle reclaim); this is a new machine")
        if process != self.process:
            return (f"the server process that ran your machine ({worker}) has stopped; "
                    "this is a new machine")
        return None

    def _key(self, token: str) -> str:
        return "machine:" + token

    def _put(self, token: str, record: dict[str, object]) -> None:
        try:
            self.store.set(self._key(token), json.dumps(record), ttl=KEEP)
        except Exception:
            log.exception("the shared store cannot be written")
