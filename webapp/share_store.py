"""The folder of shared files: bounded in total size, every file expiring after a while.

A share is ``ID.ndjson`` (a recording) or ``ID.yaml`` (a scenario); its age is its file's
modification time. A file older than ``ttl`` seconds is expired: it is removed when someone
asks for it, when a new share needs room (oldest first) and by the pump's periodic chore
(``sweep``), so one visitor filling the store locks everyone out for at most ``ttl``.

The files live in one folder (several processes or hosts share it: a common volume); the ids
are reserved in the shared store (``webapp.store``, key ``share:ID``, expiring with the
share), so two processes never hand out one id, and every process can see which shares
exist, their kind and size without reading the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time

from webapp.store import Store

ID_RE = re.compile(r"[A-Za-z0-9_-]{8}")
EXTENSIONS = ("ndjson", "yaml")  # recording, scenario


class StoreFull(Exception):
    """No room for a new share, even after the expired ones went."""


class ShareStore:
    def __init__(self, folder: str, max_total: int, ttl: float, index: Store | None = None
                 ) -> None:
        self.folder = folder
        self.max_total = max_total
        self.ttl = ttl
        self.index = index

    def _reserve(self, share_id: str, ext: str, size: int) -> bool:
        """Claim ``share_id`` in the shared index (True: nobody had it)."""
        if self.index is None:
            return True
        record = json.dumps({"ext": ext, "size": size, "created": time.time()})
        return self.index.set("share:" + share_id, record,
                              ttl=self.ttl if self.ttl > 0 else None, only_new=True)

    def _forget(self, path: str) -> None:
        """Remove a share's file and its index entry."""
        with contextlib.suppress(OSError):
            os.unlink(path)
        if self.index is not None:
            self.index.delete("share:" + os.path.basename(path).partition(".")[0])

    def indexed(self, share_id: str) -> dict[str, object] | None:
        """What the shared index knows of ``share_id`` (kind, size, created); None: nothing."""
        if self.index is None or not ID_RE.fullmatch(share_id):
            return None
        raw = self.index.get("share:" + share_id)
        return None if raw is None else dict(json.loads(raw))

    # ---------------------------------------------------------------- reading

    def _files(self) -> list[tuple[float, int, str]]:
        """(mtime, size, path) of every share, oldest first."""
        out = []
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        for entry in entries:
            name, _, ext = entry.name.partition(".")
            if ext not in EXTENSIONS or not ID_RE.fullmatch(name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat()
                out.append((st.st_mtime, st.st_size, entry.path))
        return sorted(out)

    def expired(self, mtime: float, now: float | None = None) -> bool:
        return self.ttl > 0 and (now if now is not None else time.time()) - mtime > self.ttl

    def used(self) -> int:
        return sum(size for _, size, _ in self._files())

    def find(self, share_id: str) -> tuple[str, str] | None:
        """``(path, extension)`` of a live share; an expired one is removed, and is None."""
        if not ID_RE.fullmatch(share_id):
            return None
        for ext in EXTENSIONS:
            path = os.path.join(self.folder, f"{share_id}.{ext}")
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if self.expired(mtime):
                self._forget(path)
                return None
            if os.path.isfile(path):
                return path, ext
        return None

    # ---------------------------------------------------------------- writing

    def sweep(self, need: int = 0) -> int:
        """Remove expired shares, oldest first; with ``need``, stop once that many bytes fit.
        Returns the number removed."""
        now = time.time()
        files = self._files()
        used = sum(size for _, size, _ in files)
        removed = 0
        for mtime, size, path in files:
            if need and used + need <= self.max_total:
                break
            if not self.expired(mtime, now):
                continue
            self._forget(path)
            used -= size
            removed += 1
        return removed

    def store(self, data: bytes, ext: str) -> str:
        """Write ``data`` under a fresh id; the id. ``StoreFull`` when there is no room."""
        os.makedirs(self.folder, exist_ok=True)
        if self.used() + len(data) > self.max_total:
            self.sweep(need=len(data))
            used = self.used()
            if used + len(data) > self.max_total:
                hours = f"; shares expire after {self.ttl / 3600:g} h" if self.ttl > 0 else ""
                raise StoreFull(
                    f"this server's share store is full ({used >> 20} of "
                    f"{self.max_total >> 20} MiB used{hours}): try again later")
        for _ in range(20):
            share_id = secrets.token_urlsafe(6)
            if not self._reserve(share_id, ext, len(data)):
                continue  # another process has it
            try:
                with open(os.path.join(self.folder, f"{share_id}.{ext}"), "xb") as f:
                    f.write(data)
            except FileExistsError:
                continue
            return share_id
        raise OSError("could not pick a free share id")
