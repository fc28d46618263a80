"""Validation of everything a browser (or a script) sends: socket events and JSON bodies.

Every check raises ``InputError`` with a sentence the page can show as it is; nothing here
trusts types, ranges or sizes coming from the client.
"""

from __future__ import annotations

import re
from typing import Any

from emulator.config import (
    DEFAULT_GUEST_CMDLINE,
    BalloonConfig,
    GiB,
    MachineConfig,
    MemoryDeviceConfig,
    MiB,
    NumaNodeConfig,
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MiB, "g": GiB, "t": 1024 * GiB}
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
MAX_SIZE = 1 << 50


class InputError(ValueError):
    """Bad input from the client; the message is shown in the page."""


def payload(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("expected a JSON object")
    return data


def size(value: Any, what: str = "size", *, default_unit: int = 1) -> int:
    """Bytes from an int or a QEMU-style string ("512M", "1G", "2 MiB")."""
    if isinstance(value, bool):
        raise InputError(f"{what}: expected a size, got {value!r}")
    if isinstance(value, int):
        result = value * default_unit
    elif isinstance(value, float) and value.is_integer():
        result = int(value) * default_unit
    elif isinstance(value, str) and len(value) <= 32:
        m = _SIZE.match(value)
        if not m:
            raise InputError(f"{what}: '{value}' is not a size (try 512M or 1G)")
        number, unit = m.groups()
        scale = _UNITS[unit.lower()] if unit else default_unit
        result = int(float(number) * scale)
    else:
        raise InputError(f"{what}: expected a size, got {type(value).__name__}")
    if result < 0 or result > MAX_SIZE:
        raise InputError(f"{what}: {result} is out of range")
    return result


def integer(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InputError(f"{what}: expected an integer")
    try:
        number = int(value, 0) if isinstance(value, str) else value
    except ValueError:
        raise InputError(f"{what}: '{value}' is not an integer") from None
    if not lo <= number <= hi:
        raise InputError(f"{what}: must be between {lo} and {hi}")
    return number


def flag(value: Any, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InputError(f"{what}: expected true or false")
    return value


def choice(value: Any, what: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{what}: expected one of {', '.join(options)}")
    return value


def text(value: Any, what: str, max_len: int = 256) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_len:
        raise InputError(f"{what}: expected text of at most {max_len} characters")
    return value


def device_id(value: Any, known: list[str]) -> str:
    if not isinstance(value, str) or value not in known:
        raise InputError(f"unknown device {value!r} (this machine has {', '.join(known)})")
    return value


def machine_config(form: dict[str, Any], *, max_memory: int, max_blocks: int) -> MachineConfig:
    """A ``MachineConfig`` from the new-machine form (or the JSON API), limits enforced.

    Form fields: ``boot_ram``, ``nodes`` (1..8), ``block_size``, ``device_size`` and
    ``requested_size`` (one device per node), or an explicit ``devices`` list of
    ``{id, size, requested_size, node, dynamic_memslots, rfc_write_protect}``;
    ``unplugged_inaccessible``, ``rfc_shrink_on_reboot``, ``cmdline``, ``machine`` (virt, pc,
    q35: whose QEMU rules apply); ``balloon`` (a virtio-balloon: ``true`` or
    ``{deflate_on_oom, free_page_reporting}``). Sizes take ints (MiB) or strings ("1G").
    """
    form = payload(form)
    allowed = {"boot_ram", "nodes", "block_size", "device_size", "requested_size", "devices",
               "unplugged_inaccessible", "rfc_shrink_on_reboot", "cmdline", "preset",
               "machine", "balloon"}
    unknown = sorted(set(form) - allowed)
    if unknown:
        raise InputError(f"unknown field(s): {', '.join(unknown)}")
    boot_ram = size(form.get("boot_ram", 256), "boot RAM", default_unit=MiB)
    if not 16 * MiB <= boot_ram <= 4 * GiB:
        raise InputError("boot RAM: must be between 16 MiB and 4 GiB")
    nr_nodes = integer(form.get("nodes", 2), "nodes", 1, 8)
    block_size = size(form.get("block_size", 2), "block size", default_unit=MiB)
    inaccessible = flag(form.get("unplugged_inaccessible"), "unplugged-inaccessible")
    devices: list[MemoryDeviceConfig] = []
    raw_devices = form.get("devices")
    if raw_devices is None:
        dev_size = size(form.get("device_size", 1024), "device size", default_unit=MiB)
        requested = size(form.get("requested_size", 256), "requested size", default_unit=MiB)
        raw_devices = [{"id": f"vm{n}", "size": dev_size, "requested_size": requested,
                        "node": n} for n in range(nr_nodes)]
    if not isinstance(raw_devices, list) or not 1 <= len(raw_devices) <= 8:
        raise InputError("devices: expected a list of 1 to 8 devices")
    for n, raw in enumerate(raw_devices):
        raw = payload(raw)
        dev_id = raw.get("id", f"vm{n}")
        if not isinstance(dev_id, str) or not _ID.match(dev_id):
            raise InputError(f"device id {dev_id!r}: letters, digits, '-', '_' or '.'")
        dev_size = size(raw.get("size"), f"{dev_id} size")
        if block_size >= MiB and dev_size // block_size > max_blocks:
            raise InputError(
                f"{dev_id}: {dev_size // block_size} blocks is more than this server's "
                f"limit of {max_blocks} blocks per device (use a larger block size)")
        devices.append(MemoryDeviceConfig(
            id=dev_id, memdev=f"mem{n}", size=dev_size,
            requested_size=size(raw.get("requested_size", 0), f"{dev_id} requested size"),
            node=integer(raw.get("node", 0), f"{dev_id} node", 0, 7),
            # unchecked: the machine type's default (arm virt: always on; x86 7.2: auto)
            block_size=block_size, unplugged_inaccessible=inaccessible or None,
            dynamic_memslots=flag(raw.get("dynamic_memslots"), f"{dev_id} dynamic-memslots"),
            rfc_write_protect=flag(raw.get("rfc_write_protect"),
                                   f"{dev_id} x-rfc-write-protect"),
        ))
    total = boot_ram + sum(d.size for d in devices)
    if total > max_memory:
        raise InputError(f"the machine would have {total // MiB} MiB; this server allows "
                         f"at most {max_memory // MiB} MiB per machine")
    return MachineConfig(
        balloon=balloon_config(form.get("balloon")),
        boot_ram=boot_ram,
        smp=nr_nodes,
        nodes=[NumaNodeConfig(n, [n]) for n in range(nr_nodes)] if nr_nodes > 1 else [],
        devices=devices,
        cmdline=text(form.get("cmdline", DEFAULT_GUEST_CMDLINE), "cmdline"),
        rfc_shrink_on_reboot=flag(form.get("rfc_shrink_on_reboot"), "shrink on reboot"),
        machine=choice(form.get("machine", "virt"), "machine", ("virt", "pc", "q35")),
    )


def balloon_config(value: Any) -> BalloonConfig | None:
    """The form's ``balloon``: absent/false (none), true, or its two features."""
    if value is None or value is False:
        return None
    if value is True:
        return BalloonConfig()
    form = payload(value)
    unknown = sorted(set(form) - {"deflate_on_oom", "free_page_reporting"})
    if unknown:
        raise InputError(f"balloon: unknown field(s): {', '.join(unknown)}")
    return BalloonConfig(
        deflate_on_oom=flag(form.get("deflate_on_oom"), "deflate-on-oom"),
        free_page_reporting=flag(form.get("free_page_reporting"), "free-page-reporting"))


def config_to_form(cfg: MachineConfig) -> dict[str, Any]:
    """The inverse of ``machine_config`` (exact sizes in bytes); used by save files and forms."""
    def k(value: int) -> str:
        return f"{value // 1024}K"

    return {
        "boot_ram": k(cfg.boot_ram),
        "nodes": max(1, len(cfg.nodes)),
        "block_size": k(cfg.devices[0].block_size if cfg.devices else 2 * MiB),
        "devices": [{"id": d.id, "size": k(d.size), "requested_size": k(d.requested_size),
                     "node": d.node, "dynamic_memslots": d.dynamic_memslots,
                     "rfc_write_protect": d.rfc_write_protect} for d in cfg.devices],
        "unplugged_inaccessible": any(d.unplugged_inaccessible in (True, "on")
                                      for d in cfg.devices),
        "machine": cfg.personality.name,
        "rfc_shrink_on_reboot": cfg.rfc_shrink_on_reboot,
        "cmdline": cfg.cmdline,
        **({"balloon": {"deflate_on_oom": cfg.balloon.deflate_on_oom,
                        "free_page_reporting": cfg.balloon.free_page_reporting}}
           if cfg.balloon is not None else {}),
    }
