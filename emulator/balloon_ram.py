"""Guest RAM as the balloon sees it: QEMU's ``memory_region_find`` plus the page discards.

The balloon may name any page of guest RAM -- boot RAM or a virtio-mem region (QEMU maps the
whole region as RAM) -- so "works on all memory" is literal. Inflating discards the page
(``MADV_DONTNEED``, QEMU's ``ram_block_discard_range``): host RSS falls and the page reads as
zeros. Deflating only hints ``MADV_WILLNEED``, which brings nothing back. A free page report
discards too, but the guest keeps the page.

QEMU keeps no record of which pages are in the balloon; vmemlab does, one byte per page, so
the host view can show what QEMU cannot: inflated pages that are resident again because the
guest wrote to them anyway.
"""

from __future__ import annotations

from collections.abc import Callable

from emulator.abi import PAGE_SIZE
from emulator.backing import HostMemory


class BalloonRam:
    """A ``device.virtio_balloon.BalloonBackend`` over the board's host memory."""

    def __init__(self, regions: Callable[[], list[HostMemory]],
                 ram_size: Callable[[], int]) -> None:
        self._regions = regions
        self._ram_size = ram_size
        self._inflated: dict[str, bytearray] = {}  # region name -> one byte per page

    def ram_size(self) -> int:
        return self._ram_size()

    def _find(self, gpa: int, size: int) -> HostMemory | None:
        return next((m for m in self._regions() if m.contains(gpa, size)), None)

    def _pages(self, gpa: int, pages: int, inflate: bool) -> int:
        size = pages * PAGE_SIZE
        mem = self._find(gpa, size)
        if mem is None:  # a run that leaves RAM: page by page
            if pages == 1:
                return 0
            return sum(self._pages(gpa + i * PAGE_SIZE, 1, inflate) for i in range(pages))
        offset = gpa - mem.gpa
        first = offset // PAGE_SIZE
        if inflate:
            mem.discard(offset, size)
            marks = self._inflated.setdefault(mem.name, bytearray(mem.size // PAGE_SIZE))
            marks[first : first + pages] = b"\x01" * pages
        else:
            mem.willneed(offset, size)
            kept = self._inflated.get(mem.name)
            if kept is not None:
                kept[first : first + pages] = bytes(pages)
        return pages

    def inflate(self, gpa: int, pages: int) -> int:
        return self._pages(gpa, pages, True)

    def deflate(self, gpa: int, pages: int) -> int:
        return self._pages(gpa, pages, False)

    def report(self, gpa: int, size: int) -> bool:
        mem = self._find(gpa, size)
        if mem is None:
            return False
        mem.discard(gpa - mem.gpa, size)
        return True

    def forget(self) -> None:
        """Nothing is inflated any more as far as the host knows (a fresh machine)."""
        self._inflated.clear()

    def inflated_pages(self) -> int:
        """Pages the host counts as given to it (inflated and not deflated since)."""
        return sum(marks.count(1) for marks in self._inflated.values())

    def inflated_resident(self) -> int:
        """Of the inflated pages, those backed by host memory again: the guest used them."""
        total = 0
        for mem in self._regions():
            marks = self._inflated.get(mem.name)
            if marks is None or not marks.count(1):
                continue
            resident = mem.resident_pages()
            both = int.from_bytes(marks, "little") & int.from_bytes(resident, "little")
            total += both.bit_count()  # each byte is 0 or 1
        return total
