"""The native stage-2 fill: ctypes binding of ``emulator/native/stage2_fill.c``.

``setup.py`` builds that file into ``emulator/_stage2_fill*.so``, a plain shared library with
no Python API (optional: without a C compiler the install still succeeds). Here it is loaded,
its struct layout checked against the ctypes mirror below, and its fill function registered
on an engine with ``uc_hook_add`` on the binding's handle, so Unicorn calls C directly on
every TLB miss: no Python frame, no GIL.

The map the C function reads lives in a ctypes structure owned by ``NativeFill``. It points
into Python buffers: each device model's ``bitmap`` and ``memslots``, and the per-block
zero-read and written-while-unplugged bytes. All are pinned with ``from_buffer``: while that
export exists CPython refuses to resize the bytearray (``BufferError``), so the pointers can
never dangle; content changes of the same length (the device's slice updates) are what the
C side should see anyway.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
from pathlib import Path

from unicorn import UC_HOOK_TLB_FILL, UcError
from unicorn.unicorn_py3.arch.arm64 import UcAArch64
from unicorn.unicorn_py3.arch.types import uc_hook_h
from unicorn.unicorn_py3.unicorn import uclib

LIBRARY_STEM = "_stage2_fill"
MAX_IDENTITY = 16
MAX_DEVICES = 16

_u8, _u32, _i32, _u64 = ctypes.c_uint8, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64


class IdentityWindow(ctypes.Structure):
    _fields_ = [("start", _u64), ("end", _u64), ("perms", _u32), ("pad", _u32)]


class DeviceWindow(ctypes.Structure):
    _fields_ = [("base", _u64), ("end", _u64), ("shift", _u32), ("policy", _u8),
                ("zero_dirty", _u8), ("written_dirty", _u8), ("pad", _u8),
                ("bitmap", ctypes.c_void_p), ("zero_reads", ctypes.c_void_p),
                ("written", ctypes.c_void_p), ("memslots", ctypes.c_void_p),
                ("memslot_size", _u64)]


class DeniedRecord(ctypes.Structure):
    _fields_ = [("addr", _u64), ("access", _i32), ("device", _i32), ("reason", _i32),
                ("pad", _i32)]


class Map(ctypes.Structure):
    _fields_ = [("page_mask", _u64), ("zero_page_pa", _u64), ("n_identity", _u32),
                ("n_devices", _u32), ("identity", IdentityWindow * MAX_IDENTITY),
                ("devices", DeviceWindow * MAX_DEVICES), ("denied", DeniedRecord),
                ("fills", _u64)]


class TlbEntry(ctypes.Structure):
    """``uc_tlb_entry``: what the fill answers."""

    _fields_ = [("paddr", _u64), ("perms", _u32)]


# what vmemlab_stage2_layout(i) must return, in order
_LAYOUT = (
    ctypes.sizeof(Map), ctypes.sizeof(DeviceWindow), ctypes.sizeof(IdentityWindow),
    Map.denied.offset, Map.fills.offset, DeviceWindow.bitmap.offset, ctypes.sizeof(TlbEntry),
    MAX_IDENTITY, MAX_DEVICES, DeviceWindow.written.offset, DeviceWindow.memslot_size.offset,
)

NativeLibrary = ctypes.CDLL
_loaded: list[NativeLibrary | None] = []
_reason = ""


def library_paths() -> list[Path]:
    """Where the built library may be: next to this module, with any extension suffix."""
    here = Path(__file__).resolve().parent
    return [here / f"{LIBRARY_STEM}{suffix}"
            for suffix in importlib.machinery.EXTENSION_SUFFIXES]


def load() -> NativeLibrary | None:
    """The library, loaded and checked once per process; None if unusable (see the reason)."""
    global _reason
    if _loaded:
        return _loaded[0]
    lib = None
    path = next((p for p in library_paths() if p.exists()), None)
    if path is None:
        _reason = f"{LIBRARY_STEM} was not built (no C compiler when the package was installed?)"
    else:
        try:
            lib = ctypes.CDLL(str(path))
            lib.vmemlab_stage2_layout.argtypes = (ctypes.c_int,)
            lib.vmemlab_stage2_layout.restype = _u64
            layout = tuple(lib.vmemlab_stage2_layout(i) for i in range(len(_LAYOUT)))
            if layout != _LAYOUT:
                _reason = f"{path.name}: struct layout {layout} is not the expected {_LAYOUT}"
                lib = None
            else:
                lib.vmemlab_stage2_fill.argtypes = (ctypes.c_void_p, _u64, ctypes.c_int,
                                                    ctypes.POINTER(TlbEntry), ctypes.c_void_p)
                lib.vmemlab_stage2_fill.restype = ctypes.c_bool
        except (OSError, AttributeError) as exc:
            _reason = f"{path.name}: {exc}"
            lib = None
    _loaded.append(lib)
    return lib


def unavailable_reason() -> str:
    """Why ``load()`` returned None ("" if it did not)."""
    load()
    return _reason


class NativeFill:
    """One machine's map for the C fill, and the hook that hands it to the engine."""

    def __init__(self, lib: NativeLibrary, zero_page_pa: int, page_size: int) -> None:
        self._lib = lib
        self.map = Map()
        self.map.page_mask = ~(page_size - 1) & 0xFFFF_FFFF_FFFF_FFFF
        self.map.zero_page_pa = zero_page_pa
        self._pins: list[ctypes.Array[ctypes.c_uint8]] = []
        self._installed = False

    def add_identity(self, start: int, end: int, perms: int) -> None:
        n = self.map.n_identity
        if n >= MAX_IDENTITY:
            raise ValueError(f"more than {MAX_IDENTITY} identity windows")
        self.map.identity[n] = IdentityWindow(start, end, perms, 0)
        self.map.n_identity = n + 1

    def add_device(self, base: int, end: int, shift: int, bitmap: bytearray,
                   zero_reads: bytearray, written: bytearray, memslots: bytearray,
                   memslot_size: int, policy: int) -> None:
        n = self.map.n_devices
        if n >= MAX_DEVICES:
            raise ValueError(f"more than {MAX_DEVICES} device windows")
        blocks = (end - base) >> shift
        if not len(bitmap) == len(zero_reads) == len(written) == blocks:
            raise ValueError("a device window needs one bitmap, zero-read and written byte "
                             "per block")
        if memslot_size <= 0 or len(memslots) * memslot_size < end - base:
            raise ValueError("the memslots must cover the device window")
        win = self.map.devices[n]
        win.base, win.end, win.shift, win.policy = base, end, shift, policy
        win.bitmap = self._pin(bitmap)
        win.zero_reads = self._pin(zero_reads)
        win.written = self._pin(written)
        win.memslots = self._pin(memslots)
        win.memslot_size = memslot_size
        self.map.n_devices = n + 1

    def _pin(self, buffer: bytearray) -> int:
        pinned = (ctypes.c_uint8 * len(buffer)).from_buffer(buffer)
        self._pins.append(pinned)
        return ctypes.addressof(pinned)

    def set_policy(self, index: int, policy: int) -> None:
        self.map.devices[index].policy = policy

    def take_dirty(self, index: int) -> bool:
        """Whether the C fill recorded a zero-page read on device ``index`` since last asked."""
        win = self.map.devices[index]
        dirty = bool(win.zero_dirty)
        win.zero_dirty = 0
        return dirty

    def take_written_dirty(self, index: int) -> bool:
        """Whether the C fill marked a block written while unplugged since last asked."""
        win = self.map.devices[index]
        dirty = bool(win.written_dirty)
        win.written_dirty = 0
        return dirty

    def denied(self) -> tuple[int, int, int, int] | None:
        """(addr, uc_mem_type, device index or -1, reason code) of the last refusal."""
        d = self.map.denied
        return None if d.reason == 0 else (d.addr, d.access, d.device, d.reason)

    def clear_denied(self) -> None:
        self.map.denied.reason = 0

    @property
    def fills(self) -> int:
        return int(self.map.fills)

    def install(self, uc: UcAArch64) -> None:
        """``uc_hook_add(uch, &hh, UC_HOOK_TLB_FILL, vmemlab_stage2_fill, &map, 1, 0)``.

        The engine keeps a raw pointer to ``self.map``: this object must outlive it (the
        board holds both and closes the engine first).
        """
        if self._installed:
            raise RuntimeError("the native fill is already installed on an engine")
        handle = uc_hook_h()
        fn = ctypes.cast(self._lib.vmemlab_stage2_fill, ctypes.c_void_p)
        status = uclib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_TLB_FILL, fn,
                                   ctypes.cast(ctypes.pointer(self.map), ctypes.c_void_p),
                                   ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status != 0:
            raise UcError(status)
        self._installed = True

    def decide(self, vaddr: int, access: int) -> tuple[bool, int, int]:
        """Call the C fill directly, outside any engine: (mapped, paddr, perms)."""
        entry = TlbEntry()
        ok = bool(self._lib.vmemlab_stage2_fill(None, vaddr, access, ctypes.byref(entry),
                                                ctypes.addressof(self.map)))
        return (ok, int(entry.paddr), int(entry.perms)) if ok else (False, 0, 0)
