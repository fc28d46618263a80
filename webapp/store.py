"""Shared state of the server processes: a small key-value store, in memory or in Redis.

One process keeps it in memory (``memory://``, the default). Several processes behind a
proxy (docs/scaling.md) give them all the same ``redis://host:port/db``
(``VMEMLAB_STORE_URI``): what one process writes, the others read. What lives here is small
and keyed by purpose: the share store's index (which ids exist, their kind, size and age),
the machine registry (which process runs a session's machine, so another process can tell a
student whose process went away), and the class registry of the teacher's view
(``webapp.classes``).
Values are strings; every key may expire.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol
from urllib.parse import urlparse


class Store(Protocol):
    """What the app needs of a shared store; keys and values are strings."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str, *, ttl: float | None = None,
            only_new: bool = False) -> bool:
        """Store ``value`` (expiring after ``ttl`` s); ``only_new``: only if ``key`` is not
        there yet. True when stored."""
        ...

    def delete(self, key: str) -> None: ...

    def hash_set(self, key: str, field: str, value: str) -> None: ...

    def hash_delete(self, key: str, field: str) -> None: ...

    def hash_all(self, key: str) -> dict[str, str]: ...


class MemoryStore:
    """The store of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[str, float | None]] = {}
        self._hashes: dict[str, dict[str, str]] = {}

    def _live(self, key: str, now: float) -> tuple[str, float | None] | None:
        item = self._values.get(key)
        if item is not None and item[1] is not None and item[1] <= now:
            del self._values[key]
            return None
        return item

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._live(key, time.monotonic())
            return None if item is None else item[0]

    def set(self, key: str, value: str, *, ttl: float | None = None,
            only_new: bool = False) -> bool:
        now = time.monotonic()
        with self._lock:
            if only_new and self._live(key, now) is not None:
                return False
            self._values[key] = (value, None if ttl is None else now + ttl)
            return True

    def delete(self, key: str) -> None:
        with self._lock:  # any kind of key, as Redis's DEL
            self._values.pop(key, None)
            self._hashes.pop(key, None)

    def hash_set(self, key: str, field: str, value: str) -> None:
        with self._lock:
            self._hashes.setdefault(key, {})[field] = value

    def hash_delete(self, key: str, field: str) -> None:
        with self._lock:
            self._hashes.get(key, {}).pop(field, None)

    def hash_all(self, key: str) -> dict[str, str]:
        with self._lock:
            return dict(self._hashes.get(key, {}))


class RedisStore:
    """The store of every process that names the same Redis database."""

    def __init__(self, uri: str, prefix: str = "vmemlab:") -> None:
        import redis

        self._redis = redis.Redis.from_url(uri, decode_responses=True, socket_timeout=5,
                                           socket_connect_timeout=5, health_check_interval=30)
        self._prefix = prefix

    def get(self, key: str) -> str | None:
        value = self._redis.get(self._prefix + key)
        return None if value is None else str(value)

    def set(self, key: str, value: str, *, ttl: float | None = None,
            only_new: bool = False) -> bool:
        px = None if ttl is None else max(1, int(ttl * 1000))
        return bool(self._redis.set(self._prefix + key, value, px=px, nx=only_new))

    def delete(self, key: str) -> None:
        self._redis.delete(self._prefix + key)

    def hash_set(self, key: str, field: str, value: str) -> None:
        self._redis.hset(self._prefix + key, field, value)

    def hash_delete(self, key: str, field: str) -> None:
        self._redis.hdel(self._prefix + key, field)

    def hash_all(self, key: str) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._redis.hgetall(self._prefix + key).items()}


def open_store(uri: str) -> Store:
    """``memory://`` or ``redis://[:password@]host:port/db`` (``rediss://`` for TLS)."""
    scheme = urlparse(uri).scheme
    if scheme == "memory":
        return MemoryStore()
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(uri)
    raise ValueError(f"VMEMLAB_STORE_URI: unknown store '{scheme}://' "
                     "(memory:// or redis://host:port/db)")
