"""QEMU 8.2's dynamic memslots of one virtio-mem device (``dynamic-memslots=on``).

With dynamic memslots QEMU splits the device region into memslots (``virtio_mem_prepare_
memslots``: aliases of the memdev, "but don't map them yet") and maps one only while a block
in it is plugged: ``virtio_mem_activate_memslots_to_plug`` before plugging ("Activate before
notifying"), ``virtio_mem_deactivate_unplugged_memslots`` after unplugging ("Partially
covered memslots might still have some blocks plugged and have to remain active"). Without
it, there is one memslot -- the whole region -- and it is always mapped.

The state is one byte per memslot (1 = mapped), a ``bytearray`` the stage-2 fills read in
place: it never changes length.
"""

from __future__ import annotations

from device.errors import ConfigError


class Memslots:
    """Which memslots of a device's region are mapped; see the module docstring."""

    def __init__(self, region_size: int, block_size: int, *, dynamic: bool, count: int,
                 size: int) -> None:
        if not dynamic or count <= 1:
            count, size = 1, region_size
        if size % block_size or not (count - 1) * size < region_size <= count * size:
            raise ConfigError(f"{count} memslots of 0x{size:x} do not cover the region "
                              f"(0x{region_size:x})")
        self.dynamic = dynamic
        self.size = size
        self._per_slot = size // block_size
        self._nb_blocks = region_size // block_size
        self.mapped = bytearray(b"\x00" if dynamic else b"\x01") * count
        """One byte per memslot, 1 = mapped (with static memslots: the one, always)."""

    def of_block(self, block: int) -> int:
        return block // self._per_slot

    def is_mapped(self, block: int) -> bool:
        return self.mapped[self.of_block(block)] == 1

    def _span(self, first: int, end: int) -> range:
        return range(first // self._per_slot, (end + self._per_slot - 1) // self._per_slot)

    def activate(self, first: int, end: int) -> None:
        """Blocks [first, end) are about to be plugged: map their memslots."""
        if self.dynamic:
            for idx in self._span(first, end):
                self.mapped[idx] = 1

    def deactivate_unplugged(self, bitmap: bytearray, first: int, end: int) -> None:
        """Blocks [first, end) were unplugged: unmap each memslot with nothing plugged left."""
        if self.dynamic:
            for idx in self._span(first, end):
                self.mapped[idx] = 1 if self._any_plugged(bitmap, idx) else 0

    def sync(self, bitmap: bytearray) -> None:
        """Every memslot with a plugged block mapped, the rest not (after a migration: QEMU's
        ``virtio_mem_post_load_bitmap`` activates the memslots of every plugged range)."""
        if self.dynamic:
            for idx in range(len(self.mapped)):
                self.mapped[idx] = 1 if self._any_plugged(bitmap, idx) else 0

    def _any_plugged(self, bitmap: bytearray, idx: int) -> bool:
        lo = idx * self._per_slot
        return bitmap.find(1, lo, min(lo + self._per_slot, self._nb_blocks)) != -1
