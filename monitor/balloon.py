"""The balloon in QEMU's monitor: ``balloon``/``info balloon``, ``query-balloon``, its QOM
objects (``virtio-balloon-pci`` and its ``virtio-backend``) with ``guest-stats`` and
``guest-stats-polling-interval``, QEMU 7.2's texts (reference/qemu-transcripts/11_balloon.txt).

The semantics live in ``control.balloon``; this module translates them: bytes for QMP, MiB
for HMP, QEMU's error classes and property errors.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from control import ControlError

if TYPE_CHECKING:
    from emulator.machine import Machine
    from monitor.commands import MonitorContext

PERIPHERAL = "/machine/peripheral"
INT64_MAX = (1 << 63) - 1
POLL = "guest-stats-polling-interval"

#: ``qom-list balloon0`` in QEMU 7.2's order (the transcript's)
PCI_PROPS: tuple[tuple[str, str], ...] = (
    ("type", "string"), ("parent_bus", "link<bus>"), ("realized", "bool"),
    ("hotplugged", "bool"), ("hotpluggable", "bool"), ("failover_pair_id", "str"),
    ("romfile", "str"), ("addr", "int32"), ("romsize", "uint32"),
    ("x-pcie-lnksta-dllla", "bool"), ("rombar", "uint32"), ("x-pcie-extcap-init", "bool"),
    ("acpi-index", "uint32"), ("multifunction", "bool"), ("legacy-addr", "str"),
    ("migrate-extra", "bool"), ("ats", "bool"), ("x-ignore-backend-features", "bool"),
    ("x-pcie-pm-init", "bool"), ("aer", "bool"), ("x-pcie-flr-init", "bool"),
    ("x-pcie-lnkctl-init", "bool"), ("x-ats-page-aligned", "bool"), ("page-per-vq", "bool"),
    ("x-pcie-deverr-init", "bool"), ("virtio-pci-bus-master-bug-migration", "bool"),
    ("modern-pio-notify", "bool"), ("x-disable-pcie", "bool"),
    ("disable-legacy", "OnOffAuto"), ("disable-modern", "bool"),
    ("free-page-reporting", "bool"), ("indirect_desc", "bool"),
    ("virtio-pci-device-virtio-balloon[0]", "child<memory-region>"),
    ("iommu_platform", "bool"), ("deflate-on-oom", "bool"), ("use-disabled-flag", "bool"),
    ("event_idx", "bool"), ("bus master container[0]", "child<memory-region>"),
    ("page-poison", "bool"), (POLL, "int"), ("guest-stats", "guest statistics"),
    ("x-disable-legacy-check", "bool"), ("any_layout", "bool"),
    ("iothread", "link<iothread>"), ("notify_on_empty", "bool"),
    ("virtio-pci-notify-virtio-balloon[0]", "child<memory-region>"),
    ("queue_reset", "bool"), ("qemu-4-0-config-size", "bool"), ("packed", "bool"),
    ("use-started", "bool"), ("free-page-hint", "bool"),
    ("virtio-pci[1]", "child<memory-region>"),
    ("virtio-pci-notify-pio-virtio-balloon[0]", "child<memory-region>"),
    ("virtio-pci-common-virtio-balloon[0]", "child<memory-region>"),
    ("virtio-pci[0]", "child<memory-region>"),
    ("virtio-pci-isr-virtio-balloon[0]", "child<memory-region>"),
    ("bus master[0]", "child<memory-region>"), ("virtio-bus", "child<virtio-pci-bus>"),
    ("virtio-backend", "child<virtio-balloon-device>"),
)
#: ``qom-list /machine/peripheral/balloon0/virtio-backend``
BACKEND_PROPS: tuple[tuple[str, str], ...] = (
    ("type", "string"), ("parent_bus", "link<bus>"), ("realized", "bool"),
    ("hotplugged", "bool"), ("hotpluggable", "bool"), ("queue_reset", "bool"),
    ("use-disabled-flag", "bool"), ("packed", "bool"), ("iommu_platform", "bool"),
    ("event_idx", "bool"), ("x-disable-legacy-check", "bool"), ("notify_on_empty", "bool"),
    ("any_layout", "bool"), ("use-started", "bool"), ("indirect_desc", "bool"),
    ("legacy-iothread", "str"), ("iothread", "link<iothread>"), ("deflate-on-oom", "bool"),
    ("free-page-hint", "bool"), ("page-poison", "bool"), ("qemu-4-0-config-size", "bool"),
    ("free-page-reporting", "bool"), (POLL, "int"), ("guest-stats", "guest statistics"),
)
#: the backend's own properties (through the PCI proxy they are aliases)
_BACKEND_NAMES = {name for name, _ in BACKEND_PROPS} - {
    "type", "parent_bus", "realized", "hotplugged", "hotpluggable"}
#: values from ``info qtree`` and ``qom-get`` in the transcript
_STATIC: dict[str, Any] = {
    "realized": True, "hotplugged": False, "hotpluggable": True, "failover_pair_id": "",
    "romfile": "", "romsize": 4294967295, "x-pcie-lnksta-dllla": True, "rombar": 1,
    "x-pcie-extcap-init": True, "acpi-index": 0, "multifunction": False,
    "migrate-extra": True, "ats": False, "x-ignore-backend-features": False,
    "x-pcie-pm-init": True, "aer": False, "x-pcie-flr-init": True,
    "x-pcie-lnkctl-init": True, "x-ats-page-aligned": True, "page-per-vq": False,
    "x-pcie-deverr-init": True, "virtio-pci-bus-master-bug-migration": False,
    "modern-pio-notify": False, "x-disable-pcie": False, "disable-legacy": "off",
    "disable-modern": False, "indirect_desc": True, "iommu_platform": False,
    "use-disabled-flag": True, "event_idx": True, "x-disable-legacy-check": False,
    "any_layout": True, "iothread": "", "legacy-iothread": "", "notify_on_empty": True,
    "queue_reset": True, "qemu-4-0-config-size": False, "packed": False,
    "use-started": True, "free-page-hint": False,
}
_INT = re.compile(r"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]{1,16}|0[0-7]{1,22}|[1-9][0-9]{0,19}|0)")


def _monitor_error(err: ControlError) -> Exception:
    from monitor.commands import monitor_error

    return monitor_error(err)


def _error(desc: str, cls: str = "GenericError") -> Exception:
    from monitor.commands import MonitorError

    return MonitorError(desc, cls)


# ------------------------------------------------------------------------------ commands

def balloon(ctx: MonitorContext, target: int) -> None:
    """QMP ``balloon`` / HMP ``balloon MB``: the guest's new size, in bytes."""
    try:
        ctx.control.balloon.set_target(target)
    except ControlError as err:
        raise _monitor_error(err) from None


def query_balloon(ctx: MonitorContext) -> dict[str, int]:
    """QMP ``query-balloon``: ``{"actual": <the guest's size in bytes>}``."""
    try:
        return {"actual": ctx.control.balloon.query().actual}
    except ControlError as err:
        raise _monitor_error(err) from None


def fmt_info_balloon(info: dict[str, int]) -> str:
    """HMP ``info balloon``: the guest's size in MiB (``hmp_info_balloon``: actual >> 20)."""
    return f"balloon: actual={info['actual'] >> 20}\n"


# ------------------------------------------------------------------------------ QOM

def objects(machine: Machine) -> dict[str, tuple[str, str]]:
    """QOM path -> (type, kind) of the balloon's objects (none without a balloon)."""
    balloon = machine.balloon
    if balloon is None:
        return {}
    pci = f"{PERIPHERAL}/{balloon.id}"
    return {pci: ("virtio-balloon-pci", "balloon-pci"),
            pci + "/virtio-backend": ("virtio-balloon-device", "balloon-backend")}


def props(kind: str) -> tuple[tuple[str, str], ...]:
    return PCI_PROPS if kind == "balloon-pci" else BACKEND_PROPS


def qom_get(ctx: MonitorContext, kind: str, prop: str) -> Any:
    """A property of ``balloon0`` or of its backend (the caller checked it exists)."""
    balloon = ctx.machine.balloon
    assert balloon is not None
    pci = f"{PERIPHERAL}/{balloon.id}"
    ptype = dict(props(kind))[prop]
    if prop == "type":
        return "virtio-balloon-pci" if kind == "balloon-pci" else "virtio-balloon-device"
    if ptype.startswith("child<"):
        return f"{pci}/{prop}" if kind == "balloon-pci" else f"{pci}/virtio-backend/{prop}"
    slot = len(ctx.machine.devices)
    dynamic: dict[str, Any] = {
        "guest-stats": ctx.control.balloon.guest_stats(),
        POLL: ctx.control.balloon.poll_interval(),
        "deflate-on-oom": balloon.options.deflate_on_oom,
        "free-page-reporting": balloon.options.free_page_reporting,
        "page-poison": balloon.options.page_poison,
        "parent_bus": "/machine/gpex-pcihost/pcie.0" if kind == "balloon-pci"
        else f"{pci}/virtio-bus",
        "addr": (3 + slot) * 8,
        "legacy-addr": f"{3 + slot:02x}.0",
    }
    if prop in dynamic:
        return dynamic[prop]
    return _STATIC.get(prop, False)


def qom_set(ctx: MonitorContext, kind: str, path: str, prop: str, value: Any, *,
            text: bool) -> None:
    """``qom-set`` on the balloon: only the polling interval is writable (QEMU's texts)."""
    balloon = ctx.machine.balloon
    assert balloon is not None
    ptype = dict(props(kind))[prop]
    type_name = "virtio-balloon-pci" if kind == "balloon-pci" else "virtio-balloon-device"
    if prop == "guest-stats":
        raise _error("Property 'virtio-balloon-device.guest-stats' is not writable")
    if prop == "type" or ptype.startswith("child<"):
        raise _error(f"Property '{type_name}.{prop}' is not writable")
    if prop == POLL:
        seconds = _int64(POLL, value, text=text)
        try:
            ctx.control.balloon.set_poll_interval(seconds)
        except ControlError as err:
            raise _monitor_error(err) from None
        return
    if prop in _BACKEND_NAMES:
        raise _error(f"Attempt to set property '{prop}' on anonymous device "
                     "(type 'virtio-balloon-device') after it was realized")
    if ptype.startswith("link<"):
        raise _error(f"Property '{type_name}.{prop}' is not writable")
    raise _error(f"Attempt to set property '{prop}' on device '{balloon.id}' "
                 f"(type 'virtio-balloon-pci') after it was realized")


def _int64(name: str, value: Any, *, text: bool) -> int:
    """An ``int`` property value: HMP's string input visitor or QMP's JSON (QEMU's texts)."""
    if text:  # qemu_strtoi64(str, NULL, 0, ...): the whole string, base from the prefix
        m = _INT.fullmatch(str(value))
        if m is None:
            raise _error(f"Parameter '{name}' expects int64")
        sign, digits = m.group(1), m.group(2)
        if digits[:2].lower() == "0x":
            number = int(digits[2:], 16)
        elif digits.startswith("0") and len(digits) > 1:
            number = int(digits, 8)
        else:
            number = int(digits)
        number = -number if sign == "-" else number
        if not -INT64_MAX - 1 <= number <= INT64_MAX:
            raise _error(f"Parameter '{name}' expects int64")
        return number
    if isinstance(value, bool) or not isinstance(value, int) or \
            not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise _error(f"Invalid parameter type for '{name}', expected: integer")
    return value
