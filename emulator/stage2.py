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
* an unplugged block: what the device's policy byte says (``policy_for``):

  - shipped QEMU (the default): the whole region stays mapped, nothing is protected (the
    spec: the device "MAY modify memory of unplugged blocks"; QEMU's user guide: use
    cgroups). A read sees the host's anonymous memory: one shared zero page while the block
    holds nothing (recorded as a zero-page read), the data once a rogue write put some there.
    A write goes through to the host backing, which must back that page again: the block is
    recorded as written while unplugged ("unplugged but resident") until a discard frees it;
  - ``x-rfc-write-protect=on`` (the 2017 RFC): writes are refused;
  - ``dynamic-memslots=on`` (QEMU 8.2): a memslot with nothing plugged is not mapped at all;
    an access there reaches no host memory -- an external abort on arm ``virt`` (TCG), or
    on x86 a read of 0 and a dropped write (``unassigned_mem_ops``). Unplugged blocks in a
    memslot that is mapped behave as in shipped QEMU;

  fetching from an unplugged block is always refused (and from a plugged one: device memory
  never holds code here);
* anything else: refused. The refused access is kept in ``denied`` so the machine can record
  a violation and inject a synchronous fault (or, for a dropped write, skip the store).

Two implementations give the same answers: the C function of ``emulator/native/`` (no Python,
no GIL on a miss; ``emulator.native_stage2``) when its library is built, and ``Stage2.fill``
here otherwise, or when ``VMEMLAB_STAGE2=python`` asks for it. Both read the same policy
bytes, bitmaps and memslot bytes, and record zero-page reads and unplugged writes in the same
per-block bytes.

The machine flushes Unicorn's TLB after every block-state change and every policy change, so
stale entries never let an access through that the new state answers differently.
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
#: unplugged block is always refused. With no bit set: shipped QEMU (reads see the host's
#: memory, writes go through and make the host back the page again). The decision is in
#: ``policy_for`` and one branch of ``Stage2._fill_device`` and of the C ``fill_device``.
POLICY_WRITE_PROTECT = 0x01
"""x-rfc-write-protect=on: writes to unplugged blocks are refused (the RFC's mprotect)."""
POLICY_MEMSLOTS = 0x02
"""dynamic-memslots=on: an unplugged block in an unmapped memslot has no memory behind it."""
POLICY_UNASSIGNED_IGNORED = 0x04
"""With POLICY_MEMSLOTS, x86: an access with nothing mapped reads 0, its write is dropped
(else, arm: refused, the machine injects an external abort)."""

#: Why an access was refused: the C side's ``enum s2_deny_reason``, and the text shown.
DENY_UNMAPPED = 1
DENY_FETCH_DEVICE = 2
DENY_WRITE_UNPLUGGED = 3
DENY_FETCH_UNPLUGGED = 4
DENY_NO_MEMSLOT = 5
DENY_NO_MEMSLOT_WRITE_DROPPED = 6
DENY_REASONS: dict[int, str] = {
    DENY_UNMAPPED: "unmapped address",
    DENY_FETCH_DEVICE: "instruction fetch from device memory",
    DENY_WRITE_UNPLUGGED: "write to unplugged block (x-rfc-write-protect)",
    DENY_FETCH_UNPLUGGED: "instruction fetch from unplugged block",
    DENY_NO_MEMSLOT: "no memory there: memslot not mapped (dynamic-memslots), external abort",
    DENY_NO_MEMSLOT_WRITE_DROPPED:
        "no memory there: memslot not mapped (dynamic-memslots), write dropped",
}
#: ``written`` bytes: 0 = nothing written while unplugged, 2 = written and not yet reported
#: (``take_unplugged_writes``), 1 = written and reported.
WRITTEN_NEW = 2
WRITTEN_SEEN = 1

#: ``VMEMLAB_STAGE2``: "python" forces the Python fill; "native" or unset (auto) use the C
#: fill when its library loads, else the Python fill with a one-line note in the log.
FILL_ENV = "VMEMLAB_STAGE2"
_noted: set[str] = set()


class WindowPolicy(Protocol):
    """The switches ``policy_for`` reads (``VirtioMemOptions``, ``bitmap_window.WindowOptions``)."""

    @property
    def dynamic_memslots(self) -> bool: ...
    @property
    def rfc_write_protect(self) -> bool: ...


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
    @property
    def options(self) -> WindowPolicy: ...
    @property
    def memslots(self) -> bytearray: ...
    @property
    def memslot_size(self) -> int: ...


def policy_for(device: StageWindow, unassigned_ignored: bool = False) -> int:
    """The policy byte of ``device`` (both fills read it). ``unassigned_ignored``: the machine
    is an x86 one, where an access with nothing mapped reads 0 and drops its write."""
    policy = 0
    if device.options.rfc_write_protect:
        policy |= POLICY_WRITE_PROTECT
    if device.options.dynamic_memslots:
        policy |= POLICY_MEMSLOTS
        if unassigned_ignored:
            policy |= POLICY_UNASSIGNED_IGNORED
    return policy


@dataclass
class DeniedAccess:
    """The access the last refused TLB fill was for."""

    addr: int
    access: str
    device: str | None
    reason: str
    code: int = DENY_UNMAPPED  # DENY_*

    @property
    def fault(self) -> str:
        """What the guest's CPU reports: "translation" (nothing maps it), "permission"
        (mapped, not for this access), "external" (the memory system answered with an
        error: no memslot on arm), or "dropped" (x86: the store completes without effect)."""
        if self.code == DENY_NO_MEMSLOT:
            return "external"
        if self.code == DENY_NO_MEMSLOT_WRITE_DROPPED:
            return "dropped"
        return "translation" if self.device is None else "permission"


@dataclass
class _DeviceWindow:
    device: StageWindow
    base: int
    end: int
    shift: int
    zero_reads: bytearray
    """One byte per block, set when a read went through the zero page (the C fill too)."""
    written: bytearray
    """One byte per block: written while unplugged (``WRITTEN_*``), until a discard."""
    policy: int = 0
    dirty: bool = False
    """The Python fill set a ``zero_reads`` byte since the last ``take_zero_reads``."""
    written_dirty: bool = False
    """The Python fill set a ``written`` byte to WRITTEN_NEW since the last take."""


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

    def __init__(self, zero_page_pa: int, fill: str | None = None,
                 unassigned_ignored: bool = False) -> None:
        self.zero_page_pa = zero_page_pa
        self.unassigned_ignored = unassigned_ignored
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
                            bytearray(device.nb_blocks), bytearray(device.nb_blocks),
                            policy_for(device, self.unassigned_ignored))
        self._windows.append(win)
        if self._native is not None:
            self._native.add_device(win.base, win.end, shift, device.bitmap, win.zero_reads,
                                    win.written, device.memslots, device.memslot_size,
                                    win.policy)

    def sync(self) -> bool:
        """Re-read every device's policy (after its features may have changed).

        True if one changed: the caller must flush the TLB, whose entries hold old answers.
        """
        changed = False
        for i, win in enumerate(self._windows):
            policy = policy_for(win.device, self.unassigned_ignored)
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
        if access == UC_MEM_FETCH:
            return self._deny(vaddr, access, index, DENY_FETCH_UNPLUGGED)
        if win.policy & POLICY_MEMSLOTS and \
                not win.device.memslots[(vaddr - win.base) // win.device.memslot_size]:
            # no memslot: nothing in the guest-physical address space here
            if not win.policy & POLICY_UNASSIGNED_IGNORED:
                return self._deny(vaddr, access, index, DENY_NO_MEMSLOT)
            if access == UC_MEM_WRITE:
                return self._deny(vaddr, access, index, DENY_NO_MEMSLOT_WRITE_DROPPED)
            entry.paddr = self.zero_page_pa  # unassigned_mem_read(): 0
            entry.perms = UC_PROT_READ
            return True
        if access == UC_MEM_WRITE:
            if win.policy & POLICY_WRITE_PROTECT:
                return self._deny(vaddr, access, index, DENY_WRITE_UNPLUGGED)
            if not win.written[block]:
                win.written[block] = WRITTEN_NEW
                win.written_dirty = True
            entry.paddr = page  # the host backs this page again
            entry.perms = UC_PROT_READ | UC_PROT_WRITE
            return True
        if win.written[block]:
            entry.paddr = page  # what the rogue write left there
            entry.perms = UC_PROT_READ
            return True
        win.zero_reads[block] = 1
        win.dirty = True
        entry.paddr = self.zero_page_pa
        entry.perms = UC_PROT_READ
        return True

    def _deny(self, vaddr: int, access: int, index: int | None, reason: int) -> bool:
        device = None if index is None else self._windows[index].device.id
        self._denied = DeniedAccess(vaddr, access_name(access), device, DENY_REASONS[reason],
                                    reason)
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
        return DeniedAccess(addr, access_name(access), device, DENY_REASONS[reason], reason)

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

    def take_unplugged_writes(self) -> list[tuple[StageWindow, int, int]]:
        """Runs of unplugged blocks first written since the last call: (device, first, count)."""
        runs: list[tuple[StageWindow, int, int]] = []
        for i, win in enumerate(self._windows):
            dirty, win.written_dirty = win.written_dirty, False
            if self._native is not None and self._native.take_written_dirty(i):
                dirty = True
            if not dirty:
                continue
            marks = win.written
            first = marks.find(WRITTEN_NEW)
            while first != -1:
                end = first
                while end < len(marks) and marks[end] == WRITTEN_NEW:
                    end += 1
                runs.append((win.device, first, end - first))
                marks[first:end] = bytes([WRITTEN_SEEN]) * (end - first)
                first = marks.find(WRITTEN_NEW, end)
        return runs

    def written_blocks(self, device: StageWindow) -> bytes:
        """One byte per block of ``device``: nonzero while it holds data written unplugged."""
        for win in self._windows:
            if win.device is device:
                return bytes(win.written)
        raise KeyError(device.id)

    def forget_writes(self, device: StageWindow, offset: int, size: int) -> None:
        """The host discarded [offset, offset+size) of ``device``: nothing written remains."""
        for win in self._windows:
            if win.device is device:
                first = offset >> win.shift
                end = (offset + size + (1 << win.shift) - 1) >> win.shift
                win.written[first:end] = bytes(end - first)  # same length: stays pinned
                return

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
