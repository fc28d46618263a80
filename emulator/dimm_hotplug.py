"""DIMM hot(un)plug on the board: backends, pc-dimms, their host memory and the ACPI registers.

The host half of what QEMU does for ``-m ...,slots=N,maxmem=M``, ``object_add
memory-backend-ram`` and ``device_add pc-dimm``: the DIMM is placed in the device-memory area
(``device.pc_dimm``), gets host memory of its own (one anonymous mapping, named after its
backend: that is its ramblock in migration, as in QEMU), becomes accessible in stage 2 (the
area's ``BitmapWindow``, 2 MiB blocks) and is announced to the guest through QEMU's ACPI
memory hotplug registers and the GED interrupt (``device.acpi_memhp``). ``device_del`` only
*asks* the guest; the DIMM goes when the guest's ``_EJ0`` says so, which happens inside the
guest's MMIO write: the host memory is discarded at once and unmapped from the engine at the
next safe point (``after_slice``).

A DIMM stays plugged across a system reset (the guest finds it again at boot).
Engine calls (map/unmap) run on the vCPU thread or before it starts; state changes under the
board's device lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from unicorn import UC_PROT_READ, UC_PROT_WRITE, UcError
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from device.acpi_memhp import (
    MHP_LEN,
    AcpiMemoryHotplug,
    DeviceDeleted,
    GenericEventDevice,
)
from device.errors import ConfigError, DeviceNotFound
from device.events import Event
from device.memory_backend import MemoryBackend, MemoryBackends
from device.pc_dimm import DIMM_ALIGN, DeviceMemory, DimmRequest, PcDimm, plan_dimm
from emulator import abi
from emulator.backing import HostMemory
from emulator.bitmap_window import BitmapWindow
from emulator.config import MachineConfig, MachineLayout
from emulator.stage2 import Stage2

AREA_WINDOW = "device-memory"


class DimmHotplug:
    """The machine's DIMM slots; see the module docstring."""

    def __init__(self, config: MachineConfig, layout: MachineLayout, uc: UcAArch64,
                 stage2: Stage2, *, emit: Callable[[Event], None],
                 raise_event: Callable[[], None], flush_tlb: Callable[[], None],
                 device_lock: threading.RLock) -> None:
        self.layout = layout
        self._uc = uc
        self._emit = emit
        self._flush_tlb = flush_tlb
        self._lock = device_lock
        self.backends = MemoryBackends()
        for placed in layout.devices:  # a virtio-mem device maps its backend for good
            backend = self.backends.add(placed.config.memdev or placed.config.id,
                                        placed.config.size)
            backend.used_by = placed.config.id
        for spare in config.backends:
            self.backends.add(spare.id, spare.size)
        self.dimms: dict[str, PcDimm] = {}  # by QOM path
        self.memory: dict[str, HostMemory] = {}  # by backend id (the ramblock name)
        self._unmap: list[HostMemory] = []
        self._anon = 0
        self.ged = GenericEventDevice(raise_event)
        self.acpi = AcpiMemoryHotplug(layout.slots, emit, self._notify, self._eject)
        size = layout.device_area_size // DIMM_ALIGN * DIMM_ALIGN
        self.window = (BitmapWindow(AREA_WINDOW, layout.device_area_base, size, DIMM_ALIGN)
                       if size else None)
        if self.window is not None:
            stage2.add_device(self.window)
        for dimm in layout.dimms:
            backend = self.backends.add(dimm.memdev, dimm.size)
            backend.used_by = dimm.id
            self._plug(dimm)
        #: backends the command line made (before the machine's RAM); object_add's come after
        self.boot_backends = len(self.backends)

    # ---------------------------------------------------------------- queries

    @property
    def slots(self) -> int:
        return self.layout.slots

    def plugged(self) -> list[PcDimm]:
        """The DIMMs plugged now, by slot (a copy: the guest may eject one at any time)."""
        with self._lock:
            return sorted(self.dimms.values(), key=lambda d: d.slot)

    def backend_list(self) -> list[MemoryBackend]:
        """The memory backends (a copy, in creation order)."""
        with self._lock:
            return list(self.backends)

    def by_id(self, dev_id: str) -> PcDimm | None:
        return next((d for d in self.plugged() if d.id and d.id == dev_id), None)

    def by_path(self, path: str) -> PcDimm | None:
        with self._lock:
            return self.dimms.get(path)

    def by_slot(self) -> dict[int, PcDimm]:
        return {d.slot: d for d in self.plugged()}

    def area(self) -> DeviceMemory:
        return self.layout.device_memory(self.plugged())

    def ramblocks(self) -> list[HostMemory]:
        with self._lock:
            return list(self.memory.values())

    # ---------------------------------------------------------------- object_add / object_del

    def object_add(self, backend_id: str, size: int, qom_type: str = "memory-backend-ram"
                   ) -> None:
        with self._lock:
            self.backends.add(backend_id, size, qom_type)

    def object_del(self, backend_id: str) -> None:
        with self._lock:
            self.backends.delete(backend_id)

    # ---------------------------------------------------------------- device_add / device_del

    def device_add(self, req: DimmRequest, device_ids: list[str]) -> PcDimm:
        """Plan (QEMU's checks), map and announce a DIMM; on the vCPU thread or before it runs."""
        with self._lock:
            ids = device_ids + [d.id for d in self.plugged() if d.id]
            dimm = plan_dimm(req, self.area(), self.backends, ids, self._anon)
            if not dimm.id:
                self._anon += 1
            backend = self.backends.get(dimm.memdev)
            assert backend is not None  # plan_dimm checked it
            backend.used_by = dimm.id or dimm.path
            try:
                self._plug(dimm)
            except Exception:
                backend.used_by = None
                raise
            return dimm

    def _plug(self, dimm: PcDimm) -> None:
        for other in self._unmap:  # a DIMM ejected in this slice: its mapping goes first
            if other.gpa < dimm.end and dimm.addr < other.gpa + other.size:
                self.after_slice()
                break
        mem = HostMemory(dimm.addr, dimm.size, dimm.memdev)
        try:
            self._uc.mem_map_ptr(mem.gpa, mem.size, UC_PROT_READ | UC_PROT_WRITE, mem.pointer)
        except UcError as err:
            mem.close()
            raise ConfigError(f"cannot map DIMM '{dimm.id}': {err}") from None
        self.memory[dimm.memdev] = mem
        self.dimms[dimm.path] = dimm
        assert self.window is not None  # plan_dimm refuses DIMMs without an area
        self.window.set_range(dimm.addr, dimm.size, True)
        self._flush_tlb()
        self.acpi.plug(dimm)

    def device_del(self, dev_id: str) -> PcDimm:
        """Ask the guest to eject the DIMM ``dev_id`` (it answers through ``_OST``)."""
        with self._lock:
            dimm = self.by_id(dev_id)
            if dimm is None:
                raise DeviceNotFound(dev_id)
            self.acpi.unplug_request(dimm.slot)
            return dimm

    def _eject(self, slot: int) -> bool:
        """The guest's ``_EJ0`` (inside its MMIO write): the DIMM is gone."""
        dimm = self.by_slot().get(slot)
        if dimm is None:
            return False
        with self._lock:
            assert self.window is not None
            self.window.set_range(dimm.addr, dimm.size, False)
            self._flush_tlb()
            mem = self.memory.pop(dimm.memdev)
            mem.discard(0, mem.size)
            self._unmap.append(mem)
            del self.dimms[dimm.path]
            backend = self.backends.get(dimm.memdev)
            if backend is not None:
                backend.used_by = None
            self.acpi.unplugged(slot)
        self._emit(DeviceDeleted(dimm.id, dimm.path))
        return True

    def _notify(self) -> None:
        from device.acpi_memhp import GED_MEM_HOTPLUG_EVT

        self.ged.event(GED_MEM_HOTPLUG_EVT)

    def after_slice(self) -> None:
        """Unmap the memory of ejected DIMMs from the engine (at a safe point)."""
        while self._unmap:
            mem = self._unmap.pop()
            with contextlib.suppress(UcError):
                self._uc.mem_unmap(mem.gpa, mem.size)
            mem.close()

    # ---------------------------------------------------------------- MMIO

    def mhp_read(self, offset: int, size: int) -> int:
        with self._lock:
            return self.acpi.read(offset, size) if offset < MHP_LEN else 0

    def mhp_write(self, offset: int, size: int, value: int) -> None:
        if offset < MHP_LEN:
            with self._lock:
                self.acpi.write(offset, size, value)

    def ged_read(self, offset: int, size: int) -> int:
        with self._lock:
            return self.ged.read(offset, size)

    # ---------------------------------------------------------------- firmware, migration

    def bootinfo(self, behaviour_model: int) -> bytes:
        """``struct abi_bootinfo_hotplug``: what ACPI tells the guest about memory hotplug."""
        return abi.BOOTINFO_HOTPLUG.pack(
            abi.MHP_BASE, abi.GED_BASE, self.layout.device_area_base,
            self.layout.device_area_size, self.slots, behaviour_model)

    def state(self) -> dict[str, Any]:
        return {"acpi": self.acpi.state(), "dimms": [d.state() for d in self.dimms.values()]}

    def restore(self, state: dict[str, Any]) -> None:
        """The stream's ACPI state onto this destination's own DIMMs (its command line's)."""
        self.acpi.restore(state["acpi"], self.by_slot())

    def close(self) -> None:
        for mem in [*self.memory.values(), *self._unmap]:
            with contextlib.suppress(BufferError, ValueError):
                mem.close()
