"""Guest kernel command-line options the sandbox switches, in one place.

The guest (guest/README.md) reads them like Linux would: ``modprobe.blacklist=virtio_mem``
boots without the driver (an unmodified guest), ``modprobe.blacklist=virtio_balloon`` without
the balloon driver, ``virtio_mem.adopt=1`` is the 2017 RFC's guest that keeps memory it finds
plugged. Switching one keeps every other option as it was.
"""

from __future__ import annotations

NO_DRIVER = "modprobe.blacklist=virtio_mem"
ADOPT = "virtio_mem.adopt=1"
#: the boot option a guest without each driver has (ACPI memory hotplug is built into Linux:
#: its switch is acpi_no_memhotplug; the balloons are modules)
DRIVER_OPTIONS = {
    "virtio_mem": NO_DRIVER,
    "acpi_memhotplug": "acpi_no_memhotplug",
    "xen_balloon": "modprobe.blacklist=xen_balloon",
    "hv_balloon": "modprobe.blacklist=hv_balloon",
    "virtio_balloon": "modprobe.blacklist=virtio_balloon",
}


def with_option(cmdline: str, option: str, enabled: bool) -> str:
    """``cmdline`` with ``option`` present (once, at the end) or absent; the rest unchanged."""
    words = [w for w in cmdline.split() if w != option]
    return " ".join([*words, option] if enabled else words)


def has_option(cmdline: str, option: str) -> bool:
    return option in cmdline.split()


def driver_cmdline(cmdline: str, driver: bool, name: str = "virtio_mem") -> str:
    """The command line for a boot with (``True``) or without (``False``) driver ``name``."""
    return with_option(cmdline, DRIVER_OPTIONS[name], not driver)
