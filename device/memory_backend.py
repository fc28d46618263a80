"""Memory backends: QEMU's ``-object memory-backend-ram`` / ``object_add`` objects.

A backend is host memory with an id and a size, created on its own and mapped later by one
memory device (a pc-dimm, or a virtio-mem device at boot). QEMU checks it in this order and
with these texts (qom/object_interfaces.c, backends/hostmem.c):

* the id must be well formed (``Parameter 'id' expects an identifier``) and unused
  (``attempt to add duplicate property 'd1' to object (type 'container')``);
* its size must be given and not 0 (``can't create backend with size 0``);
* it cannot be deleted while a device maps it (``object 'd1' is in use, can not be
  deleted``), nor if it does not exist (``object 'x' not found``).

Pure Python: the emulator gives a backend its host memory when a device maps it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from device.errors import ConfigError

BACKEND_TYPES = ("memory-backend-ram", "memory-backend-memfd", "memory-backend-file")
#: properties ``object_add memory-backend-ram,...`` accepts (QEMU 7.2's hostmem properties)
BACKEND_PROPERTIES = ("id", "size", "merge", "dump", "prealloc", "share", "reserve", "policy",
                      "host-nodes", "prealloc-threads", "x-use-canonical-path-for-ramblock-id",
                      "seal", "hugetlb", "hugetlbsize", "mem-path", "discard-data", "align",
                      "readonly", "max-size")


def id_wellformed(text: str) -> bool:
    """QEMU's ``id_wellformed``: an ASCII letter, then letters, digits, ``-._``."""
    return (bool(text) and text[0].isascii() and text[0].isalpha()
            and all(ch.isascii() and (ch.isalnum() or ch in "-._") for ch in text[1:]))


@dataclass
class MemoryBackend:
    """One ``memory-backend-*`` object."""

    id: str
    size: int
    qom_type: str = "memory-backend-ram"
    used_by: str | None = None  # the id of the device that maps it

    @property
    def path(self) -> str:
        return f"/objects/{self.id}"


class MemoryBackends:
    """The machine's ``/objects`` container of memory backends, in creation order."""

    def __init__(self) -> None:
        self._items: dict[str, MemoryBackend] = {}

    def __iter__(self) -> Iterator[MemoryBackend]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, backend_id: object) -> bool:
        return backend_id in self._items

    def get(self, backend_id: str) -> MemoryBackend | None:
        return self._items.get(backend_id)

    def add(self, backend_id: str, size: int, qom_type: str = "memory-backend-ram"
            ) -> MemoryBackend:
        """``object_add``; raises ``ConfigError`` with QEMU's text."""
        if not id_wellformed(backend_id):
            raise ConfigError("Parameter 'id' expects an identifier")
        if backend_id in self._items:
            raise ConfigError(f"attempt to add duplicate property '{backend_id}' to object "
                              "(type 'container')")
        if size <= 0:
            raise ConfigError("can't create backend with size 0")
        backend = MemoryBackend(backend_id, size, qom_type)
        self._items[backend_id] = backend
        return backend

    def delete(self, backend_id: str) -> None:
        """``object_del``; raises ``ConfigError`` with QEMU's text."""
        backend = self._items.get(backend_id)
        if backend is None:
            raise ConfigError(f"object '{backend_id}' not found")
        if backend.used_by is not None:
            raise ConfigError(f"object '{backend_id}' is in use, can not be deleted")
        del self._items[backend_id]

    def state(self) -> list[dict[str, object]]:
        return [{"id": b.id, "size": b.size, "type": b.qom_type, "used_by": b.used_by}
                for b in self._items.values()]
