"""Host-side access to guest-physical memory, with the rules a device must follow.

``DmaMemory`` is what the virtqueue uses: a device may only touch boot RAM and *plugged*
device blocks (the spec forbids DMA to unplugged memory), so anything else raises
``GuestMemoryError`` and the transport marks itself broken instead of reading host memory it
must not. ``CpuView`` reads memory as QEMU's ``address_space_read`` does, for the monitor's
``x``/``xp``: the host memory behind every mapped block, plugged or not (an unplugged block
reads as zeros -- the host kernel's shared zero page, which costs nothing -- unless a rogue
write put data there), and "Cannot access memory" where ``dynamic-memslots`` left no memslot
mapped.
"""

from __future__ import annotations

from collections.abc import Sequence

from device.errors import GuestMemoryError
from device.virtio_mem import VirtioMemDevice
from emulator.backing import HostMemory


class _Regions:
    def __init__(self, boot: HostMemory, devices: Sequence[tuple[VirtioMemDevice, HostMemory]]):
        self.boot = boot
        self.devices = list(devices)

    def _device_for(self, gpa: int, size: int) -> tuple[VirtioMemDevice, HostMemory] | None:
        for dev, mem in self.devices:
            if mem.contains(gpa, size):
                return dev, mem
        return None


class DmaMemory(_Regions):
    """Guest memory as a device may access it (boot RAM and plugged blocks only)."""

    def _locate(self, gpa: int, size: int) -> tuple[HostMemory, int]:
        if size < 0 or gpa < 0:
            raise GuestMemoryError(f"invalid guest memory access {gpa:#x}+{size:#x}")
        if self.boot.contains(gpa, size):
            return self.boot, gpa - self.boot.gpa
        found = self._device_for(gpa, size)
        if found is None:
            raise GuestMemoryError(f"DMA to {gpa:#x}+{size:#x} is outside guest RAM")
        dev, mem = found
        first = (gpa - dev.addr) // dev.block_size
        last = (gpa + max(size, 1) - 1 - dev.addr) // dev.block_size
        if dev.bitmap.count(1, first, last + 1) != last - first + 1:
            raise GuestMemoryError(f"DMA to {gpa:#x}+{size:#x} touches unplugged memory")
        return mem, gpa - mem.gpa

    def read(self, gpa: int, size: int) -> bytes:
        mem, offset = self._locate(gpa, size)
        return mem.read(offset, size)

    def write(self, gpa: int, data: bytes) -> None:
        mem, offset = self._locate(gpa, len(data))
        mem.write(offset, data)


class CpuView(_Regions):
    """Guest memory as QEMU's physical-memory reads see it (see the module docstring)."""

    def read(self, gpa: int, size: int) -> bytes:
        if self.boot.contains(gpa, size):
            return self.boot.read(gpa - self.boot.gpa, size)
        found = self._device_for(gpa, size)
        if found is None:
            raise GuestMemoryError(f"Cannot access memory at {gpa:#x}")
        dev, mem = found
        out = bytearray(size)
        pos = gpa
        while pos < gpa + size:
            block = (pos - dev.addr) // dev.block_size
            block_end = dev.addr + (block + 1) * dev.block_size
            chunk = min(gpa + size, block_end) - pos
            if not dev.bitmap[block] and not dev.memslot_mapped(block):
                raise GuestMemoryError(f"Cannot access memory at {pos:#x}")
            out[pos - gpa : pos - gpa + chunk] = mem.read(pos - mem.gpa, chunk)
            pos += chunk
        return bytes(out)
