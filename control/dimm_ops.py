"""Memory backends and pc-dimms as typed operations: ``object_add``, ``device_add``, ...

``MachineControl.dimms`` is a ``DimmControl``. Every front-end translates into these calls:
HMP and QMP (``monitor/dimm.py``: ``object_add``, ``object_del``, ``device_add pc-dimm``,
``device_del``, ``query-acpi-ospm-status``), the compare page and scenarios (through HMP
steps). Properties arrive as strings (HMP, command line) or JSON values (QMP) and are
checked here with QEMU's texts; QEMU's own placement and realize checks are in
``device.pc_dimm``. ``device_del`` returns at once, as QEMU's does: the guest answers later
(``ACPI_DEVICE_OST``, then ``DEVICE_DELETED`` -- or a "device busy" status and nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from control.errors import ControlError, ErrorKind
from control.sizes import U64_MAX, json_to_uint64, parse_property_size
from device.memory_backend import BACKEND_PROPERTIES, BACKEND_TYPES, id_wellformed
from device.pc_dimm import PC_DIMM_PROPERTIES, DimmRequest, PcDimm

if TYPE_CHECKING:
    from emulator.machine import Machine

#: at most this many memory backends per machine (a visitor's object_add is bounded too)
MAX_BACKENDS = 512
Props = dict[str, Any]


def _engine(fn: Callable[[], Any]) -> Any:
    from control.machine_control import engine_call

    return engine_call(fn)


def _uint(name: str, value: Any, bits: int, type_name: str) -> int:
    """A qdev integer property from a string (HMP) or a JSON number (QMP)."""
    if isinstance(value, bool):
        raise ControlError(f"Invalid parameter type for '{name}', expected: integer")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = int(text, 0) if text and len(text) <= 24 else None
        except ValueError:
            number = None
        if number is None:
            raise ControlError(f"Parameter '{name}' expects {type_name}")
        value = number
    if not isinstance(value, int) or value < 0 or value >= 1 << bits:
        raise ControlError(f"Parameter '{name}' expects {type_name}")
    return value


def _size(name: str, value: Any) -> int:
    if isinstance(value, str):
        try:
            return parse_property_size(name, value)
        except ValueError as err:
            raise ControlError(str(err)) from None
    try:
        return json_to_uint64(name, value)
    except ValueError as err:
        raise ControlError(str(err)) from None


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ControlError(f"Invalid parameter type for '{name}', expected: string")
    return value


class DimmControl:
    """The memory-hotplug operations of one machine (``MachineControl.dimms``)."""

    def __init__(self, machine: Machine, admit: Callable[[int], None]) -> None:
        self.machine = machine
        self._admit = admit

    # ---------------------------------------------------------------- backends

    def object_add(self, qom_type: str, props: Props) -> str:
        """``object_add TYPE,id=ID,size=SIZE`` (QMP ``object-add``); the backend's id."""
        if qom_type not in BACKEND_TYPES:
            raise ControlError(f"Invalid parameter type for 'qom-type', expected: one of "
                               f"{', '.join(BACKEND_TYPES)} (vmemlab creates memory backends "
                               "only)")
        for key in props:
            if key not in BACKEND_PROPERTIES:
                raise ControlError(f"Property '{qom_type}.{key}' not found")
        if "id" not in props:
            raise ControlError("Parameter 'id' is missing")
        backend_id = _string("id", props["id"])
        if not id_wellformed(backend_id):
            raise ControlError("Parameter 'id' expects an identifier")
        size = _size("size", props["size"]) if "size" in props else 0
        if size > U64_MAX:
            raise ControlError("Parameter 'size' expects uint64")
        hotplug = self.machine.hotplug
        if len(hotplug.backends) >= MAX_BACKENDS and backend_id not in hotplug.backends:
            raise ControlError(f"vmemlab keeps at most {MAX_BACKENDS} memory backends per "
                               "machine", ErrorKind.EXHAUSTED)
        _engine(lambda: hotplug.object_add(backend_id, size, qom_type))
        return backend_id

    def object_del(self, backend_id: str) -> None:
        """``object_del ID`` (QMP ``object-del``)."""
        _engine(lambda: self.machine.hotplug.object_del(backend_id))

    # ---------------------------------------------------------------- DIMMs

    @staticmethod
    def parse_request(driver: str, props: Props) -> DimmRequest:
        """``device_add DRIVER,prop=value,...`` for a pc-dimm, with QEMU's texts."""
        if driver in ("virtio-mem-pci", "virtio-mem"):
            raise ControlError("Bus 'pcie.0' does not support hotplugging")
        if driver != "pc-dimm":
            raise ControlError(f"'{driver}' is not a valid device model name")
        for key in props:
            if key not in PC_DIMM_PROPERTIES:
                raise ControlError(f"Property 'pc-dimm.{key}' not found")
        dev_id = None
        if "id" in props:
            dev_id = _string("id", props["id"])
            if not id_wellformed(dev_id):
                raise ControlError("Parameter 'id' expects an identifier")
        memdev = _string("memdev", props["memdev"]) if "memdev" in props else None
        node = _uint("node", props["node"], 32, "uint32") if "node" in props else 0
        slot = None
        if "slot" in props:
            slot = _uint("slot", props["slot"], 31, "int32")
        addr = _uint("addr", props["addr"], 64, "uint64") if "addr" in props else None
        return DimmRequest(dev_id, memdev, node, slot, addr)

    def device_add(self, driver: str, props: Props) -> PcDimm:
        """``device_add pc-dimm,id=,memdev=[,node=][,slot=][,addr=]``: the plugged DIMM."""
        req = self.parse_request(driver, props)
        machine = self.machine
        self._admit(0)  # the guest may grow by the DIMM's size: the server's budget decides
        ids = list(machine.devices)
        return _engine(lambda: machine.call(lambda: machine.hotplug.device_add(req, ids)))

    def device_del(self, dev_id: str) -> None:
        """``device_del ID``: ask the guest to give the DIMM back (returns at once)."""
        machine = self.machine
        if dev_id in machine.devices:
            raise ControlError("Bus 'pcie.0' does not support hotplugging")
        if machine.config.behaviour_model == "hyperv" and machine.hotplug.by_id(dev_id):
            raise ControlError("the Hyper-V behaviour model cannot remove hot-added memory: "
                               "give memory back by ballooning (mem-set)", ErrorKind.REFUSED)
        _engine(lambda: machine.hotplug.device_del(dev_id))

    def ospm_status(self) -> list[dict[str, Any]]:
        """``query-acpi-ospm-status``: what the guest last reported per DIMM slot."""
        machine = self.machine
        with machine.device_lock:
            return machine.hotplug.acpi.ospm_status()
