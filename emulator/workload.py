"""Typed wrappers for the guest's workload commands (``ABI_CMD_*`` in guest/include/abi.h).

The host never fakes a workload: each call is carried out by the guest's own allocator and
driver, and the numbers returned are the guest's.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emulator import abi

if TYPE_CHECKING:
    from emulator.machine import GuestResult, Machine

_seeds = itertools.count(0x5EED_0001)


@dataclass(frozen=True)
class Allocation:
    id: int
    pages: int
    unmovable: bool


class GuestError(Exception):
    """A workload command failed inside the guest (carries the guest's errno)."""

    def __init__(self, result: GuestResult) -> None:
        self.result = result
        super().__init__(f"guest {result.command} failed: {errno_name(result.status)}")


def errno_name(status: int) -> str:
    """``ENOMEM`` for -12 and so on: the guest's -errno as Linux would print its name."""
    names = {-abi.ENOMEM: "ENOMEM", -abi.EFAULT: "EFAULT", -abi.EINVAL: "EINVAL",
             -abi.ENOENT: "ENOENT", -abi.EBUSY: "EBUSY", -abi.ENODEV: "ENODEV",
             -abi.EPERM: "EPERM"}
    return names.get(status, str(status))


def target_code(target: str | int | None) -> int:
    """``None``/"any" → anywhere, "boot" → boot RAM, an int or "vm0"-style index → a device."""
    if target is None or target == "any":
        return abi.TARGET_ANY
    if target == "boot":
        return abi.TARGET_BOOT
    return int(target)


class Workload:
    """What a user can make the guest do."""

    def __init__(self, machine: Machine, timeout: float = 120.0) -> None:
        self.machine = machine
        self.timeout = timeout

    def _run(self, command: str, a0: int = 0, a1: int = 0, a2: int = 0,
             check: bool = True) -> GuestResult:
        result = self.machine.guest_command(command, a0, a1, a2, timeout=self.timeout)
        if check and not result.ok:
            raise GuestError(result)
        return result

    def _device_index(self, device: str | int | None) -> int | str | None:
        """A virtio-mem device's index, or ``TARGET_DIMM + slot`` for a pc-dimm's id."""
        if isinstance(device, str) and device in self.machine.devices:
            return list(self.machine.devices).index(device)
        if isinstance(device, str) and device not in ("any", "boot"):
            dimm = self.machine.hotplug.by_id(device)
            if dimm is not None:
                return abi.TARGET_DIMM + dimm.slot
        return device

    def alloc(self, size: int, *, unmovable: bool = False,
              target: str | int | None = None, seed: int | None = None,
              huge: bool = False) -> Allocation:
        flags = (abi.ALLOC_UNMOVABLE if unmovable else 0) | (
            target_code(self._device_index(target)) << 8) | (abi.ALLOC_HUGE if huge else 0)
        result = self._run("alloc", size, flags, next(_seeds) if seed is None else seed)
        return Allocation(result.values[0], result.values[1], unmovable)

    def free(self, alloc: Allocation | int = 0) -> int:
        return self._run("free", _id(alloc)).values[0]

    def touch(self, alloc: Allocation | int = 0) -> int:
        return self._run("touch", _id(alloc)).values[0]

    def verify(self, alloc: Allocation | int = 0) -> tuple[int, int]:
        """(bad pages, pages checked)."""
        v = self._run("verify", _id(alloc)).values
        return v[0], v[1]

    def dump(self, device: str | int | None = None, *, legacy: bool = False) -> tuple[int, int]:
        """kdump-style read of device memory: (bytes read, non-zero pages).

        Default: Linux >= 5.16's kdump, which asks the device (STATE) per device block and
        reads only plugged ones. ``legacy``: the RFC's / an older kdump, which reads every
        page of the memory the guest added, unplugged parts included.
        """
        index = self._device_index(device)
        which = 0xFFFF_FFFF_FFFF_FFFF if index is None else int(index)
        v = self._run("dump", which, abi.DUMP_LEGACY if legacy else 0).values
        return v[0], v[1]

    def rogue_write(self, addr: int = 0, device: str | int = 0) -> GuestResult:
        """Store to unplugged memory; ``status == -EFAULT`` when the access faulted.

        ``values``: (the address, the value the guest read back after the store).
        """
        index = self._device_index(device)
        return self._run("rogue-write", addr, int(index or 0), check=False)

    def read(self, addr: int) -> GuestResult:
        return self._run("read", addr, check=False)

    def stats(self) -> None:
        self._run("stats")

    def online(self, device: str | int | None = None, online_type: str = "online_movable") -> int:
        """Online every offline memory block of ``device`` (None: of all devices), as
        ``echo online_movable > /sys/devices/system/memory/memoryN/state`` does; returns how
        many memory blocks were onlined. ``online_type``: online, online_kernel, online_movable.
        """
        types = {name: code for code, name in abi.ONLINE_TYPES.items() if code}
        if online_type not in types:
            raise ValueError(f"online type {online_type!r}: expected one of {', '.join(types)}")
        index = self._device_index(device)
        which = 0xFFFF_FFFF_FFFF_FFFF if index is None else int(index)
        return self._run("online", which, types[online_type]).values[0]

    def balloon_rogue(self, pages: int) -> tuple[int, int]:
        """Write to ``pages`` balloon pages without telling the host: (written, bad)."""
        v = self._run("balloon-rogue", pages).values
        return v[0], v[1]

    def reboot(self) -> None:
        """Ask the guest to reboot itself (PSCI SYSTEM_RESET); it never answers."""
        self.machine.submit_command("reboot")


def _id(alloc: Allocation | int) -> int:
    return alloc.id if isinstance(alloc, Allocation) else int(alloc)
