"""Stage-2 translation: the sandbox's EPT, decided per page on every TLB miss.

Unicorn runs in ``UC_TLB_VIRTUAL`` mode and asks the fill hook for every guest page it has no
TLB entry for. The board sets Unicorn's target page to 4 KiB (``TLB_PAGE_SIZE``) before
anything initialises the engine, so a page here is the guest's own 4 KiB page (Unicorn's
default for AArch64 is 1 KiB: four times the misses; see docs/engine-notes.md). The hook
covers the whole address space on purpose: for an address no hook claims, Unicorn's built-in
identity fill grants only the permission of the current access, so a page that is read and
written refills on every switch (measured: a load/store loop ran 5x slower). One fill per page
gives full permissions instead. (No ``UC_HOOK_MEM_UNMAPPED`` either: any memory hook pushes
every guest load and store off QEMU's fast path, measured 8x slower; the fill hook already
refuses what nothing backs.) The answer follows the virtio-mem rules:

* the guest image: identity, executable; the rest of boot RAM and the MMIO windows:
  identity, read/write (fetching from them is refused);
* a plugged device block: read/write to its host backing;
* an unplugged block: what the device's policy byte says (``policy_for``): reads see a
  read-only alias of one shared zero page (they cost the host nothing), or are refused once
  ``VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE`` is negotiated; writes and fetches are refused;
* anything else: refused. The refused access is kept in ``denied`` so the machine can record
  a violation and inject a synchronous fault.

Two implementations give the same answers: the C function of ``emulator/native/`` (no Python,
no GIL on a miss; ``emulator.native_stage2``) when its library is built, and ``Stage2.fill``
here otherwise, or when ``VMEMLAB_STAGE2=python`` asks for it. Both read the same policy
bytes and record zero-page reads in the same per-block bytes.

The machine flushes Unicorn's TLB after every block-state change and every policy change, so
stale entries never let a write through to a block that was just unplugged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

from unicorn import (
    UC_HOOK_TLB_FILL,
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
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from emulator import native_stage2

log = logging.getLogger(__name__)

#: Unicorn's target page, set with ``ctl_set_page_size`` before the engine initialises: the
#: unit of every TLB entry and so of every decision here. The guest's page size; every window
#: stage 2 maps starts and ends on it (a page never straddles two decisions).
TLB_PAGE_SIZE = 4096
_PAGE_MASK = ~(TLB_PAGE_SIZE - 1)

#: Per-device policy byte (mirrored in emulator/native/stage2_fill.c): what an access to an
#: UNPLUGGED block does. Plugged blocks are read/write, never executable; fetching from an
#: unplugged block is always refused; so is writing to one, today. A new behaviour (shipped
#: QEMU lets such a write through and the host backs the page again; the RFC's option
#: write-protects) is a new bit, set in ``policy_for`` and handled in one branch of
#: ``Stage2._fill_device`` and one of the C ``fill_device``.
POLICY_READ_ZERO_PAGE = 0x01
"""Reads map the shared zero page read-only (recorded as zero-page reads); else refused."""

#: Why an access was refused: the C side's ``enum s2_deny_reason``, and the text shown.
DENY_UNMAPPED = 1
DENY_FETCH_DEVICE = 2
DENY_WRITE_UNPLUGGED = 3
DENY_FETCH_UNPLUGGED = 4
DENY_READ_INACCESSIBLE = 5
DENY_REASONS: dict[int, str] = {
    DENY_UNMAPPED: "unmapped address",
    DENY_FETCH_DEVICE: "instruction fetch from device memory",
    DENY_WRITE_UNPLUGGED: "write to unplugged block",
    DENY_FETCH_UNPLUGGED: "instruction fetch from unplugged block",
    DENY_READ_INACCESSIBLE: "read of unplugged block (VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE)",
}

#: ``VMEMLAB_STAGE2``: "python" forces the Python fill; "native" or unset (auto) use the C
#: fill when its library loads, else the Python fill with a one-line note in the log.
FILL_ENV = "VMEMLAB_STAGE2"
_noted: set[str] = set()


class StageWindow(Protocol):
    """What a window of per-block decisions needs: a virtio-mem device, or a
    ``emulator.bitmap_window.BitmapWindow`` (the DIMM area, the Xen model's physmap)."""

    @property
    def id(self) -> str: ...
    @property
    def addr(self) -> int: ...
    @property
    def region_size(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def nb_blocks(self) -> int: ...
    @property
    def usable_region_size(self) -> int: ...
    @property
    def unplugged_inaccessible_negotiated(self) -> bool: ...
    @property
    def bitmap(self) -> bytearray: ...


def policy_for(device: StageWindow) -> int:
    """The policy byte of ``device`` in its current state (both fills read it)."""
    policy = 0
    if not device.unplugged_inaccessible_negotiated:
        policy |= POLICY_READ_ZERO_PAGE
    return policy


@dataclass
class DeniedAccess:
    """The access the last refused TLB fill was for."""

    addr: int
    access: str
    device: str | None
    reason: str


@dataclass
class _DeviceWindow:
    device: StageWindow
    base: int
    end: int
    shift: int
    zero_reads: bytearray
    """One byte per block, set when a read went through the zero page (the C fill too)."""
    policy: int = 0
    dirty: bool = False
    """The Python fill set a ``zero_reads`` byte since the last ``take_zero_reads``."""


class _Entry:
    """What ``decide`` hands the Python fill in place of Unicorn's ``uc_tlb_entry``."""

    paddr = 0
    perms = 0


def _choose_fill(requested: str | None) -> native_stage2.NativeLibrary | None:
    """The native library to use, or None for the Python fill (see ``FILL_ENV``)."""
    want = (os.environ.get(FILL_ENV, "") if requested is None else requested).lower()
    if want == "python":
        return None
    if want not in ("", "auto", "native"):
        _note(f"{FILL_ENV}={want!r} is not python, native or auto: using auto")
    lib = native_stage2.load()
    if lib is None:
        _note(f"native stage-2 fill unavailable ({native_stage2.unavailable_reason()}): "
              "using the Python fill")
    return lib


def _note(message: str) -> None:
    if message not in _noted:
        _noted.add(message)
        log.warning(message)


class Stage2:
    """Guest-physical → host-physical decisions for one machine.

    ``fill`` selects the implementation ("python", "native"/"auto"); None reads
    ``VMEMLAB_STAGE2``. ``kind`` says which one runs.
    """

    def __init__(self, zero_page_pa: int, fill: str | None = None) -> None:
        self.zero_page_pa = zero_page_pa
        self._identity: list[tuple[int, int, int]] = []  # (start, end, perms)
        self._windows: list[_DeviceWindow] = []
        self._denied: DeniedAccess | None = None
        lib = _choose_fill(fill)
        self._native = (native_stage2.NativeFill(lib, zero_page_pa, TLB_PAGE_SIZE)
                        if lib is not None else None)
        self.kind = "python" if self._native is None else "native"

    # ---------------------------------------------------------------- the map

    def add_identity(self, start: int, size: int, perms: int = UC_PROT_ALL) -> None:
        _check_aligned(start, size)
        self._identity.append((start, start + size, perms))
        if self._native is not None:
            self._native.add_identity(start, start + size, perms)

    def add_device(self, device: StageWindow) -> None:
        _check_aligned(device.addr, device.region_size)
        shift = device.block_size.bit_length() - 1
        win = _DeviceWindow(device, device.addr, device.addr + device.region_size, shift,
                            bytearray(device.nb_blocks), policy_for(device))
        self._windows.append(win)
        if self._native is not None:
            self._native.add_device(win.base, win.end, shift, device.bitmap, win.zero_reads,
                                    win.policy)

    def sync(self) -> bool:
        """Re-read every device's policy (after its features may have changed).

        True if one changed: the caller must flush the TLB, whose entries hold old answers.
        """
        changed = False
        for i, win in enumerate(self._windows):
            policy = policy_for(win.device)
            if policy != win.policy:
                win.policy = policy
                if self._native is not None:
                    self._native.set_policy(i, policy)
                changed = True
        return changed

    def install(self, uc: UcAArch64) -> None:
        """Register the fill on ``uc`` (once, before the vCPU first runs)."""
        if self._native is not None:
            self._native.install(uc)
        else:
            uc.hook_add(UC_HOOK_TLB_FILL, self.fill)

    # ---------------------------------------------------------------- the Python fill

    def fill(self, _uc: Any, vaddr: int, access: int, entry: Any, _ud: Any) -> bool:
        """``UC_HOOK_TLB_FILL`` callback: map the page or refuse the access."""
        page = vaddr & _PAGE_MASK
        for start, end, perms in self._identity:
            if start <= vaddr < end:
                entry.paddr = page
                entry.perms = perms
                return True
        for index, win in enumerate(self._windows):
            if win.base <= vaddr < win.end:
                return self._fill_device(index, win, vaddr, page, access, entry)
        return self._deny(vaddr, access, None, DENY_UNMAPPED)

    def _fill_device(self, index: int, win: _DeviceWindow, vaddr: int, page: int,
                     access: int, entry: Any) -> bool:
        block = (vaddr - win.base) >> win.shift
        if win.device.bitmap[block]:
            if access == UC_MEM_FETCH:
                return self._deny(vaddr, access, index, DENY_FETCH_DEVICE)
            entry.paddr = page
            entry.perms = UC_PROT_READ | UC_PROT_WRITE
            return True
        # an unplugged block: the device's policy decides
        if access == UC_MEM_WRITE:
            return self._deny(vaddr, access, index, DENY_WRITE_UNPLUGGED)
        if access == UC_MEM_FETCH:
            return self._deny(vaddr, access, index, DENY_FETCH_UNPLUGGED)
        if not win.policy & POLICY_READ_ZERO_PAGE:
            return self._deny(vaddr, access, index, DENY_READ_INACCESSIBLE)
        win.zero_reads[block] = 1
        win.dirty = True
        entry.paddr = self.zero_page_pa
        entry.perms = UC_PROT_READ
        return True

    def _deny(self, vaddr: int, access: int, index: int | None, reason: int) -> bool:
        device = None if index is None else self._windows[index].device.id
        self._denied = DeniedAccess(vaddr, access_name(access), device, DENY_REASONS[reason])
        return False

    # ---------------------------------------------------------------- what the fills recorded

    @property
    def denied(self) -> DeniedAccess | None:
        """The last refused access since ``denied`` was last cleared (set it to None)."""
        if self._native is None:
            return self._denied
        record = self._native.denied()
        if record is None:
            return None
        addr, access, index, reason = record
        device = self._windows[index].device.id if index >= 0 else None
        return DeniedAccess(addr, access_name(access), device, DENY_REASONS[reason])

    @denied.setter
    def denied(self, value: None) -> None:
        if value is not None:
            raise ValueError("only the fills record a refused access")
        self._denied = None
        if self._native is not None:
            self._native.clear_denied()

    @property
    def fills(self) -> int | None:
        """TLB fills the native fill answered (None for the Python fill, which does not count)."""
        return None if self._native is None else self._native.fills

    def take_zero_reads(self) -> list[tuple[StageWindow, int, int]]:
        """Runs of blocks read through the zero page since the last call: (device, first, count)."""
        runs: list[tuple[StageWindow, int, int]] = []
        for i, win in enumerate(self._windows):
            dirty, win.dirty = win.dirty, False
            if self._native is not None and self._native.take_dirty(i):
                dirty = True
            if not dirty:
                continue
            reads = win.zero_reads
            first = reads.find(1)
            while first != -1:
                end = reads.find(0, first)
                if end == -1:
                    end = len(reads)
                runs.append((win.device, first, end - first))
                reads[first:end] = bytes(end - first)  # same length: the buffer stays put
                first = reads.find(1, end)
        return runs

    def decide(self, vaddr: int, access: int) -> tuple[bool, int, int]:
        """One fill outside any engine: (mapped, paddr, perms). For tests and benchmarks."""
        if self._native is not None:
            return self._native.decide(vaddr, access)
        entry = _Entry()
        ok = self.fill(None, vaddr, access, entry, None)
        return (ok, entry.paddr, entry.perms) if ok else (False, 0, 0)


def _check_aligned(start: int, size: int) -> None:
    if start % TLB_PAGE_SIZE or size % TLB_PAGE_SIZE or size <= 0:
        raise ValueError(f"stage-2 window {start:#x}+{size:#x} is not whole "
                         f"{TLB_PAGE_SIZE:#x}-byte TLB pages")


def access_name(access: int) -> str:
    """"read", "write" or "fetch" for any of Unicorn's memory access codes."""
    if access in (UC_MEM_WRITE, UC_MEM_WRITE_UNMAPPED, UC_MEM_WRITE_PROT):
        return "write"
    if access in (UC_MEM_FETCH, UC_MEM_FETCH_UNMAPPED, UC_MEM_FETCH_PROT):
        return "fetch"
    return "read"
