"""A stage-2 window of per-block presence that is not a virtio-mem device.

``Stage2`` decides pages through windows with one byte per block; a virtio-mem device is one
such window. Memory that appears and disappears in other ways needs the same decision, with
nothing readable where nothing is: the device-memory area where pc-dimms are plugged
(2 MiB blocks) and the Xen behaviour model's physmap (4 KiB pages the host populated). Reads,
writes and fetches of an absent block are refused (no zero page: there is no memory there);
the board decides what a refused access means.

For stage 2 such a window is what a virtio-mem device with ``dynamic-memslots`` is where
nothing is plugged: every block is its own memslot, mapped only while present (``memslots`` is
the presence bitmap itself), so an absent block has no memory behind it at all -- an external
abort on arm, a read of 0 and a dropped write on x86 (``stage2.policy_for``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WindowOptions:
    """The two policy switches stage 2 reads (``VirtioMemOptions`` has the same names)."""

    dynamic_memslots: bool = True
    rfc_write_protect: bool = False


class BitmapWindow:
    """``[addr, addr + region_size)`` in ``block_size`` blocks; ``bitmap[i]`` = present."""

    unplugged_inaccessible_negotiated = True  # nothing is readable where nothing is
    options = WindowOptions()

    def __init__(self, window_id: str, addr: int, region_size: int, block_size: int) -> None:
        if block_size <= 0 or block_size & (block_size - 1) or region_size % block_size:
            raise ValueError(f"{window_id}: {region_size:#x} is not whole {block_size:#x} blocks")
        self.id = window_id
        self.addr = addr
        self.region_size = region_size
        self.block_size = block_size
        self.nb_blocks = region_size // block_size
        self.bitmap = bytearray(self.nb_blocks)

    @property
    def usable_region_size(self) -> int:
        return self.region_size

    @property
    def memslots(self) -> bytearray:
        """One memslot per block, mapped while the block is present."""
        return self.bitmap

    @property
    def memslot_size(self) -> int:
        return self.block_size

    def contains(self, gpa: int, size: int = 1) -> bool:
        return self.addr <= gpa and gpa + size <= self.addr + self.region_size

    def set_range(self, gpa: int, size: int, present: bool) -> None:
        """Mark the blocks of ``[gpa, gpa + size)`` (whole blocks) present or absent."""
        first = (gpa - self.addr) // self.block_size
        count = size // self.block_size
        self.bitmap[first:first + count] = (b"\x01" if present else b"\x00") * count

    def present(self, gpa: int, size: int) -> bool:
        """Every block of ``[gpa, gpa + size)`` is present."""
        if not self.contains(gpa, max(size, 1)):
            return False
        first = (gpa - self.addr) // self.block_size
        last = (gpa + max(size, 1) - 1 - self.addr) // self.block_size
        return self.bitmap.count(1, first, last + 1) == last - first + 1
