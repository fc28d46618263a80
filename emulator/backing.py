"""Host memory that backs guest RAM and really gives it back.

Each region is one anonymous ``mmap`` (``MAP_NORESERVE``): pages cost host memory only once
the guest touches them. Discarding a range is ``madvise(MADV_DONTNEED)``, what QEMU's
``ram_block_discard_range`` does for anonymous memory, so the host's RSS falls and the range
reads as zeros afterwards (a replugged block never shows old data). ``mincore`` answers which
pages are resident: the honest "host view" of a block.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os

from emulator.abi import PAGE_SHIFT, PAGE_SIZE

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_libc.mincore.restype = ctypes.c_int

HOST_PAGE_SIZE = mmap.PAGESIZE
# Python < 3.13 does not export it; without it the kernel's overcommit heuristic refuses a
# region larger than RAM + swap (a 64 GiB device on a 24 GiB host).
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


class HostMemory:
    """One guest-physical range backed by anonymous host memory."""

    def __init__(self, gpa: int, size: int, name: str) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"{name}: size {size:#x} is not a multiple of {PAGE_SIZE:#x}")
        self.gpa = gpa
        self.size = size
        self.name = name
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE
        self._map = mmap.mmap(-1, size, flags=flags)
        self._anchor = ctypes.c_char.from_buffer(self._map)
        self.pointer = ctypes.addressof(self._anchor)
        self.view = memoryview(self._map)

    def contains(self, gpa: int, size: int = 1) -> bool:
        return self.gpa <= gpa and gpa + size <= self.gpa + self.size

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self.view[offset : offset + size])

    def write(self, offset: int, data: bytes) -> None:
        self.view[offset : offset + len(data)] = data

    def discard(self, offset: int, size: int) -> None:
        """Give the range back to the host; it reads as zeros from now on."""
        self._map.madvise(mmap.MADV_DONTNEED, offset, size)

    def willneed(self, offset: int, size: int) -> None:
        """``MADV_WILLNEED``: a hint that the range is needed again. For anonymous memory
        that was discarded it brings nothing back (the pages are populated on next touch):
        what QEMU does when a balloon deflates."""
        self._map.madvise(mmap.MADV_WILLNEED, offset, size)

    def resident_pages(self, offset: int = 0, size: int | None = None) -> bytearray:
        """One byte per host page of the range: 1 if it holds host memory of its own.

        ``/proc/self/pagemap`` tells, per page, "present" (bit 63) and "exclusively mapped"
        (bit 56, no privilege needed). A page the guest only *read* maps the kernel's shared
        zero page: present but not exclusive, and it costs nothing, so it does not count.
        ``mincore`` (1 byte a page instead of 8) finds the chunks worth asking pagemap about,
        so a mostly unplugged 16 GiB region is scanned in ~10 ms; it is also the fallback
        where pagemap is unavailable.
        """
        size = self.size - offset if size is None else size
        pages = (size + HOST_PAGE_SIZE - 1) // HOST_PAGE_SIZE
        vec = self._mincore(offset, size, pages)
        first = (self.pointer + offset) // HOST_PAGE_SIZE
        try:
            pagemap = open("/proc/self/pagemap", "rb", buffering=0)  # noqa: SIM115
        except OSError:
            return vec
        with pagemap:
            for start in range(0, pages, _PAGEMAP_CHUNK):
                end = min(start + _PAGEMAP_CHUNK, pages)
                if vec.find(1, start, end) < 0:
                    continue
                raw = os.pread(pagemap.fileno(), (end - start) * 8, (first + start) * 8)
                if len(raw) != (end - start) * 8:
                    continue  # keep mincore's answer for this chunk
                vec[start:end] = raw[7::8].translate(_PRESENT_EXCLUSIVE)
        return vec

    def _mincore(self, offset: int, size: int, pages: int) -> bytearray:
        vec = (ctypes.c_ubyte * pages)()
        if _libc.mincore(ctypes.c_void_p(self.pointer + offset), size, vec) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mincore: {os.strerror(err)}")
        return bytearray(bytes(vec)).translate(_LOW_BIT)

    def resident_bytes(self, offset: int = 0, size: int | None = None) -> int:
        return self.resident_pages(offset, size).count(1) * HOST_PAGE_SIZE

    def resident_per_block(self, block_size: int) -> list[int]:
        """Resident bytes of each ``block_size`` chunk of the region."""
        vec = self.resident_pages()
        per_block = block_size // HOST_PAGE_SIZE
        return [
            vec.count(1, i, i + per_block) * HOST_PAGE_SIZE for i in range(0, len(vec), per_block)
        ]

    def close(self) -> None:
        """Unmap the host memory (the caller makes sure nobody maps it any more)."""
        if self._map.closed:
            return
        self.view.release()
        del self._anchor
        self._map.close()


# mincore sets bit 0 per page; other bits are reserved, so keep only bit 0
_LOW_BIT = bytes(i & 1 for i in range(256))
# the top byte of a pagemap entry: bit 7 = present (63), bit 0 = exclusively mapped (56)
_PAGEMAP_CHUNK = 16384  # pages (64 MiB) per pagemap read
_PRESENT_EXCLUSIVE = bytes(1 if (i & 0x81) == 0x81 else 0 for i in range(256))

assert PAGE_SIZE == 1 << PAGE_SHIFT
