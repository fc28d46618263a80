"""ACPI memory hotplug: QEMU's register block between the firmware's AML and the DIMM slots.

QEMU (hw/acpi/memory_hotplug.c) gives the guest's ACPI code 24 bytes of registers; the AML
methods QEMU generates (``MSCN``, ``_OST``, ``_EJ0``) use them, and so does vmemlab's guest
(guest/acpi_memhp.c does what the AML interpreter would). Reads, for the selected slot:

====  =====================================================================
0x00  address of the DIMM, low 32 bits        0x04  high 32 bits
0x08  size, low 32 bits                       0x0c  high 32 bits
0x10  NUMA node (``_PXM``)
0x14  flags: bit 0 enabled, bit 1 insert event pending, bit 2 remove event pending
====  =====================================================================

Writes: 0x00 selects a slot; 0x04 stores the ``_OST`` event, 0x08 the ``_OST`` status (and
emits QEMU's ``ACPI_DEVICE_OST`` event); 0x14 bit 1 clears the insert event, bit 2 the remove
event, bit 3 ejects the DIMM (``_EJ0``: QEMU unplugs it and emits ``DEVICE_DELETED``). As in
QEMU, a selector past the last slot makes every other write a no-op, unknown offsets read as
all ones, and nothing the guest writes can raise.

The guest's ``_OST`` codes are Linux's (drivers/acpi/scan.c): source 1 (device check = insert)
or 3 (eject request), status 0 (success), 0x84 = 132 (ejection in progress), 0x82 = 130
(device busy: a memory block could not be offlined).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from device.events import Event
from device.pc_dimm import PcDimm

MHP_LEN = 24
MASK32 = 0xFFFF_FFFF
FLAG_ENABLED = 1
FLAG_INSERTING = 2
FLAG_REMOVING = 4
FLAG_EJECT = 8
OST_SRC_INSERT = 1  # ACPI_NOTIFY_DEVICE_CHECK
OST_SRC_EJECT = 3  # ACPI_NOTIFY_EJECT_REQUEST
OST_SUCCESS = 0
OST_FAILURE = 1  # ACPI_OST_SC_NON_SPECIFIC_FAILURE
OST_DEVICE_BUSY = 0x82  # 130
OST_EJECT_IN_PROGRESS = 0x84  # 132


@dataclass(frozen=True, slots=True)
class AcpiDeviceOst(Event):
    """QEMU's ``ACPI_DEVICE_OST`` event: the guest reported a hotplug result (``_OST``)."""

    kind: ClassVar[str] = "acpi_device_ost"
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceDeleted(Event):
    """QEMU's ``DEVICE_DELETED``: the guest ejected the device and it is gone."""

    kind: ClassVar[str] = "device_deleted"
    device: str
    path: str


@dataclass
class MemStatus:
    """QEMU's ``MemStatus``: one slot as the register block sees it."""

    dimm: PcDimm | None = None
    is_enabled: bool = False
    is_inserting: bool = False
    is_removing: bool = False
    ost_event: int = 0
    ost_status: int = 0


def ost_info(slot: int, mdev: MemStatus) -> dict[str, Any]:
    """QEMU's ``acpi_memory_device_status``: the ``ACPIOSTInfo`` of a slot."""
    info: dict[str, Any] = {}
    if mdev.dimm is not None and mdev.dimm.id:
        info["device"] = mdev.dimm.id
    info.update({"source": mdev.ost_event, "status": mdev.ost_status, "slot": str(slot),
                 "slot-type": "DIMM"})
    return info


class AcpiMemoryHotplug:
    """The register block and slot states; see the module docstring.

    ``notify()`` is QEMU's ``acpi_send_event`` (the GED interrupt); ``eject(slot)`` does the
    unplug when the guest's ``_EJ0`` asks for it and returns False if it could not.
    """

    def __init__(self, slots: int, emit: Callable[[Event], None],
                 notify: Callable[[], None], eject: Callable[[int], bool]) -> None:
        self.devs = [MemStatus() for _ in range(max(0, slots))]
        self.selector = 0
        self._emit = emit
        self._notify = notify
        self._eject = eject

    @property
    def slots(self) -> int:
        return len(self.devs)

    # ---------------------------------------------------------------- host side

    def plug(self, dimm: PcDimm) -> None:
        """``acpi_memory_plug_cb``: the slot holds ``dimm``; a hotplugged one is announced."""
        mdev = self.devs[dimm.slot]
        mdev.dimm = dimm
        mdev.is_enabled = True
        if dimm.hotplugged:
            mdev.is_inserting = True
            self._notify()

    def unplug_request(self, slot: int) -> None:
        """``acpi_memory_unplug_request_cb``: ask the guest to eject the slot's DIMM."""
        mdev = self.devs[slot]
        mdev.is_removing = True
        self._notify()

    def unplugged(self, slot: int) -> None:
        """``acpi_memory_unplug_cb``: the DIMM is gone (the OST record stays, as in QEMU)."""
        mdev = self.devs[slot]
        mdev.is_enabled = False
        mdev.dimm = None

    def ospm_status(self) -> list[dict[str, Any]]:
        """``query-acpi-ospm-status`` for the DIMM slots."""
        return [ost_info(slot, mdev) for slot, mdev in enumerate(self.devs)]

    # ---------------------------------------------------------------- guest side (MMIO)

    def read(self, offset: int, size: int = 4) -> int:
        """A guest read of the register block (any offset and size: never raises)."""
        if not self.devs or not 0 <= self.selector < len(self.devs):
            return 0
        mdev = self.devs[self.selector]
        dimm = mdev.dimm
        if offset == 0x0:
            value = dimm.addr & MASK32 if dimm else 0
        elif offset == 0x4:
            value = dimm.addr >> 32 if dimm else 0
        elif offset == 0x8:
            value = dimm.size & MASK32 if dimm else 0
        elif offset == 0xC:
            value = dimm.size >> 32 if dimm else 0
        elif offset == 0x10:
            value = dimm.node if dimm else 0
        elif offset == 0x14:
            value = ((FLAG_ENABLED if mdev.is_enabled else 0)
                     | (FLAG_INSERTING if mdev.is_inserting else 0)
                     | (FLAG_REMOVING if mdev.is_removing else 0))
        else:
            value = MASK32
        return value & ((1 << (8 * size)) - 1) if 0 < size <= 8 else value

    def write(self, offset: int, size: int, value: int) -> None:
        """A guest write to the register block (QEMU's ``acpi_memory_hotplug_write``)."""
        if not self.devs:
            return
        value &= MASK32
        if offset and not 0 <= self.selector < len(self.devs):
            return  # "invalid slot selected": every write but the selector is ignored
        if offset == 0x0:
            self.selector = value
        elif offset == 0x4:
            self.devs[self.selector].ost_event = value
        elif offset == 0x8:
            mdev = self.devs[self.selector]
            mdev.ost_status = value
            self._emit(AcpiDeviceOst(ost_info(self.selector, mdev)))
        elif offset == 0x14:
            mdev = self.devs[self.selector]
            if value & FLAG_INSERTING:
                mdev.is_inserting = False
            elif value & FLAG_REMOVING:
                mdev.is_removing = False
            elif value & FLAG_EJECT and mdev.is_enabled:
                self._eject(self.selector)

    # ---------------------------------------------------------------- migration

    def state(self) -> dict[str, Any]:
        """QEMU's ``vmstate_memhp_state``: the selector and each slot's flags and OST."""
        return {"selector": self.selector, "devs": [
            {"is_enabled": m.is_enabled, "is_inserting": m.is_inserting,
             "is_removing": m.is_removing, "ost_event": m.ost_event,
             "ost_status": m.ost_status} for m in self.devs]}

    def restore(self, state: dict[str, Any], dimms: dict[int, PcDimm]) -> None:
        """Take over ``state()``; ``dimms`` are the destination's DIMMs by slot."""
        devs = state["devs"]
        if len(devs) != len(self.devs):
            from device.errors import MigrationError

            raise MigrationError(f"memory hotplug: {len(devs)} slots in the stream, "
                                 f"{len(self.devs)} here")
        self.selector = int(state["selector"])
        for slot, (mdev, saved) in enumerate(zip(self.devs, devs, strict=True)):
            mdev.dimm = dimms.get(slot)
            mdev.is_enabled = bool(saved["is_enabled"]) and mdev.dimm is not None
            mdev.is_inserting = bool(saved["is_inserting"])
            mdev.is_removing = bool(saved["is_removing"])
            mdev.ost_event = int(saved["ost_event"])
            mdev.ost_status = int(saved["ost_status"])


GED_EVT_SEL = 0x0
GED_MEM_HOTPLUG_EVT = 0x1


class GenericEventDevice:
    """QEMU's ACPI GED (hw/acpi/generic_event_device.c): the event selector the guest's
    interrupt handler reads (and thereby clears) to learn which event fired."""

    def __init__(self, raise_irq: Callable[[], None]) -> None:
        self.sel = 0
        self._raise_irq = raise_irq

    def event(self, sel: int) -> None:
        """``acpi_ged_event``: latch the event and pulse the interrupt."""
        self.sel |= sel
        self._raise_irq()

    def read(self, offset: int, size: int = 4) -> int:
        if offset != GED_EVT_SEL:
            return 0
        value, self.sel = self.sel, 0
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """The event selector is read-only (QEMU's ged_evt_write ignores writes)."""
