"""Stage-2 translation: the sandbox's EPT, decided per page on every TLB miss.

Unicorn runs in ``UC_TLB_VIRTUAL`` mode and asks ``Stage2.fill`` for every guest page it has
no TLB entry for (Unicorn's AArch64 TLB pages are 1 KiB). The hook covers the whole address
space on purpose: for an address no hook claims, Unicorn's built-in identity fill grants only
the permission of the current access, so a page that is read and written refills on every
switch (measured: a load/store loop ran 5x slower). One Python call per page gives full
permissions instead. (No ``UC_HOOK_MEM_UNMAPPED`` either: any memory hook pushes every guest
load and store off QEMU's fast path, measured 8x slower; the fill hook already refuses what
nothing backs.) The answer follows the virtio-mem rules:

* the guest image: identity, executable; the rest of boot RAM and the MMIO windows:
  identity, read/write (fetching from them is refused);
* a plugged device block: read/write to its host backing;
* an unplugged block: a read-only alias of one shared zero page (reads see zeros and cost the
  host nothing), or no mapping at all once ``VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`` is
  negotiated;
* anything else, and every write to an unplugged block: refused. The refused access is kept in
  ``denied`` so the machine can record a violation and inject a synchronous fault.

The machine flushes Unicorn's TLB after every block-state change, so stale entries never let a
write through to a block that was just unplugged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unicorn import (
    UC_MEM_FETCH,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MEM_WRITE,
    UC_MEM_WRITE_PROT,
    UC_MEM_WRITE_UNMAPPED,
    UC_PROT_ALL,
    UC_PROT_READ,
    UC_PROT_WRITE,
)

from device.virtio_mem import VirtioMemDevice

# Unicorn emulates AArch64 with 1 KiB target pages (QEMU's TARGET_PAGE_BITS_MIN for ARM) and
# cannot change that for arm64, so TLB entries, and so these decisions, are per 1 KiB.
TLB_PAGE_SIZE = 1024
_PAGE_MASK = ~(TLB_PAGE_SIZE - 1)


@dataclass
class DeniedAccess:
    """The access the last refused TLB fill was for."""

    addr: int
    access: str
    device: str | None
    reason: str


@dataclass
class _DeviceWindow:
    device: VirtioMemDevice
    base: int
    end: int
    shift: int
    zero_reads: set[int] = field(default_factory=set)


class Stage2:
    """Guest-physical → host-physical decisions for one machine."""

    def __init__(self, zero_page_pa: int) -> None:
        self.zero_page_pa = zero_page_pa
        self._identity: list[tuple[int, int, int]] = []  # (start, end, perms)
        self._windows: list[_DeviceWindow] = []
        self.denied: DeniedAccess | None = None

    def add_identity(self, start: int, size: int, perms: int = UC_PROT_ALL) -> None:
        self._identity.append((start, start + size, perms))

    def add_device(self, device: VirtioMemDevice) -> None:
        shift = device.block_size.bit_length() - 1
        self._windows.append(
            _DeviceWindow(device, device.addr, device.addr + device.region_size, shift)
        )

    def fill(self, _uc: Any, vaddr: int, access: int, entry: Any, _ud: Any) -> bool:
        """``UC_HOOK_TLB_FILL`` callback: map the page or refuse the access."""
        page = vaddr & _PAGE_MASK
        for start, end, perms in self._identity:
            if start <= vaddr < end:
                entry.paddr = page
                entry.perms = perms
                return True
        for win in self._windows:
            if win.base <= vaddr < win.end:
                return self._fill_device(win, vaddr, page, access, entry)
        self.denied = DeniedAccess(vaddr, access_name(access), None, "unmapped address")
        return False

    def _fill_device(self, win: _DeviceWindow, vaddr: int, page: int, access: int,
                     entry: Any) -> bool:
        dev = win.device
        block = (vaddr - win.base) >> win.shift
        if dev.bitmap[block]:
            entry.paddr = page
            entry.perms = UC_PROT_READ | UC_PROT_WRITE
            if access != UC_MEM_FETCH:
                return True
            self.denied = DeniedAccess(vaddr, "fetch", dev.id,
                                       "instruction fetch from device memory")
            return False
        if access == UC_MEM_WRITE:
            reason = "write to unplugged block"
        elif access == UC_MEM_FETCH:
            reason = "instruction fetch from unplugged block"
        elif dev.unplugged_inaccessible_negotiated:
            reason = "read of unplugged block (VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE)"
        else:
            win.zero_reads.add(block)
            entry.paddr = self.zero_page_pa
            entry.perms = UC_PROT_READ
            return True
        self.denied = DeniedAccess(vaddr, access_name(access), dev.id, reason)
        return False

    def take_zero_reads(self) -> list[tuple[VirtioMemDevice, int, int]]:
        """Runs of blocks read through the zero page since the last call: (device, first, count)."""
        runs: list[tuple[VirtioMemDevice, int, int]] = []
        for win in self._windows:
            if not win.zero_reads:
                continue
            blocks = sorted(win.zero_reads)
            win.zero_reads.clear()
            first = prev = blocks[0]
            for b in blocks[1:]:
                if b != prev + 1:
                    runs.append((win.device, first, prev - first + 1))
                    first = b
                prev = b
            runs.append((win.device, first, prev - first + 1))
        return runs


def access_name(access: int) -> str:
    """"read", "write" or "fetch" for any of Unicorn's memory access codes."""
    if access in (UC_MEM_WRITE, UC_MEM_WRITE_UNMAPPED, UC_MEM_WRITE_PROT):
        return "write"
    if access in (UC_MEM_FETCH, UC_MEM_FETCH_UNMAPPED, UC_MEM_FETCH_PROT):
        return "fetch"
    return "read"
