"""Guest kernel command-line options the sandbox switches, in one place.

The guest (guest/README.md) reads them like Linux would: ``modprobe.blacklist=virtio_mem``
boots without the driver (an unmodified guest), ``modprobe.blacklist=virtio_balloon`` without
the balloon driver, ``virtio_mem.adopt=1`` is the 2017 RFC's guest that keeps memory it finds
plugged. Switching one keeps every other option as it was.
"""

from __future__ import annotations

NO_DRIVER = "modprobe.blacklist=virtio_mem"
NO_BALLOON_DRIVER = "modprobe.blacklist=virtio_balloon"
ADOPT = "virtio_mem.adopt=1"


def with_option(cmdline: str, option: str, enabled: bool) -> str:
    """``cmdline`` with ``option`` present (once, at the end) or absent; the rest unchanged."""
    words = [w for w in cmdline.split() if w != option]
    return " ".join([*words, option] if enabled else words)


def has_option(cmdline: str, option: str) -> bool:
    return option in cmdline.split()


def driver_cmdline(cmdline: str, driver: bool) -> str:
    """The command line for a boot with (``True``) or without (``False``) the driver."""
    return with_option(cmdline, NO_DRIVER, not driver)


def balloon_driver_cmdline(cmdline: str, driver: bool) -> str:
    """The command line for a boot with (``True``) or without (``False``) virtio_balloon."""
    return with_option(cmdline, NO_BALLOON_DRIVER, not driver)
