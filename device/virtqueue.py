"""Split virtqueue (virtio 1.x §2.7), device side, over a guest-memory accessor.

Everything the guest wrote is untrusted: every index, length and address is validated and a
malformed ring raises :class:`VirtqueueError` (QEMU's ``virtio_error`` text where it has one),
which the transport turns into a broken device instead of a Python traceback.
Indirect descriptors and event-idx are not offered, so they are errors/ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from device.errors import GuestMemoryError, VirtqueueError

VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
MAX_QUEUE_SIZE = 128  # QEMU virtio-mem (and balloon): virtio_add_queue(vdev, 128, ...)
DESC_ALIGN, AVAIL_ALIGN, USED_ALIGN = 16, 2, 4

_DESC = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")
_U64_END = 1 << 64
_U32_MAX = (1 << 32) - 1


class GuestMemory(Protocol):
    """DMA view of guest-physical memory (the emulator implements it)."""

    def read(self, gpa: int, size: int) -> bytes:
        """Bytes at ``gpa``; raises GuestMemoryError if not DMA-accessible."""
        ...

    def write(self, gpa: int, data: bytes) -> None:
        """Store bytes at ``gpa``; raises GuestMemoryError if not DMA-accessible."""
        ...


@dataclass
class Chain:
    """One descriptor chain: device-readable buffers first, then device-writable ones."""

    head: int
    readable: list[tuple[int, int]] = field(default_factory=list)
    writable: list[tuple[int, int]] = field(default_factory=list)
    mem: GuestMemory | None = field(default=None, repr=False, compare=False)

    @property
    def readable_len(self) -> int:
        return sum(length for _, length in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(length for _, length in self.writable)

    def read(self, limit: int) -> bytes:
        """The first ``limit`` bytes of the readable buffers (fewer if they are shorter)."""
        out = bytearray()
        for addr, length in self.readable:
            if len(out) >= limit:
                break
            out += self._mem_read(addr, min(length, limit - len(out)))
        return bytes(out)

    def read_all(self) -> bytes:
        """All readable bytes (bounded by the validated chain length)."""
        return self.read(self.readable_len)

    def write(self, data: bytes) -> int:
        """Scatter ``data`` over the writable buffers; returns the number of bytes written."""
        done = 0
        for addr, length in self.writable:
            if done >= len(data):
                break
            part = data[done : done + length]
            self._mem_write(addr, part)
            done += len(part)
        return done

    def _mem_read(self, addr: int, size: int) -> bytes:
        if self.mem is None:
            raise VirtqueueError("chain has no guest memory")
        try:
            return self.mem.read(addr, size)
        except GuestMemoryError as exc:
            raise VirtqueueError(f"virtio: bogus descriptor or out of resources ({exc})") from exc

    def _mem_write(self, addr: int, data: bytes) -> None:
        if self.mem is None:
            raise VirtqueueError("chain has no guest memory")
        try:
            self.mem.write(addr, data)
        except GuestMemoryError as exc:
            raise VirtqueueError(f"virtio: bogus descriptor or out of resources ({exc})") from exc


def check_queue_layout(size: int, desc_addr: int, avail_addr: int, used_addr: int,
                       max_size: int = MAX_QUEUE_SIZE) -> None:
    """Raise VirtqueueError unless size and ring alignment are valid for a 1.x split ring
    whose device offers at most ``max_size`` entries (QueueNumMax)."""
    if not 1 <= size <= max_size or size & (size - 1):
        raise VirtqueueError(
            f"virtio: queue size {size} is not a power of two in [1, {max_size}]"
        )
    for name, addr, align in (
        ("descriptor table", desc_addr, DESC_ALIGN),
        ("driver (avail) ring", avail_addr, AVAIL_ALIGN),
        ("device (used) ring", used_addr, USED_ALIGN),
    ):
        if addr % align or not 0 <= addr < _U64_END:
            raise VirtqueueError(f"virtio: {name} address 0x{addr:x} not {align}-byte aligned")


class SplitVirtqueue:
    """Device side of one split virtqueue: pop available chains, push used elements."""

    def __init__(
        self, mem: GuestMemory, size: int, desc_addr: int, avail_addr: int, used_addr: int,
        *, max_size: int = MAX_QUEUE_SIZE,
    ) -> None:
        check_queue_layout(size, desc_addr, avail_addr, used_addr, max_size)
        self.mem = mem
        self.size = size
        self.desc_addr = desc_addr
        self.avail_addr = avail_addr
        self.used_addr = used_addr
        self.last_avail_idx = 0
        """Next avail ring slot the device will consume (free-running, mod 2^16)."""
        self.used_idx = 0
        """Device's used idx (free-running, mod 2^16)."""

    def _read(self, gpa: int, size: int, what: str) -> bytes:
        try:
            data = self.mem.read(gpa, size)
        except GuestMemoryError as exc:
            raise VirtqueueError(f"virtio: cannot read {what} at 0x{gpa:x}: {exc}") from exc
        if len(data) != size:
            raise VirtqueueError(f"virtio: short read of {what} at 0x{gpa:x}")
        return data

    def _write(self, gpa: int, data: bytes, what: str) -> None:
        try:
            self.mem.write(gpa, data)
        except GuestMemoryError as exc:
            raise VirtqueueError(f"virtio: cannot write {what} at 0x{gpa:x}: {exc}") from exc

    def avail_idx(self) -> int:
        return int(_U16.unpack(self._read(self.avail_addr + 2, 2, "avail idx"))[0])

    def avail_flags(self) -> int:
        return int(_U16.unpack(self._read(self.avail_addr, 2, "avail flags"))[0])

    def pop(self) -> Chain | None:
        """Next available chain, validated, or None if the ring is empty."""
        avail = self.avail_idx()
        pending = (avail - self.last_avail_idx) & 0xFFFF
        if pending > self.size:
            raise VirtqueueError(f"Guest moved used index from {self.last_avail_idx} to {avail}")
        if pending == 0:
            return None
        slot = self.avail_addr + 4 + 2 * (self.last_avail_idx % self.size)
        head = int(_U16.unpack(self._read(slot, 2, "avail ring"))[0])
        if head >= self.size:
            raise VirtqueueError(f"Guest says index {head} is available")
        chain = self._walk(head)
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        return chain

    def _walk(self, head: int) -> Chain:
        chain = Chain(head, mem=self.mem)
        index, seen, total = head, 0, 0
        while True:
            if seen >= self.size:
                raise VirtqueueError("Looped descriptor")
            seen += 1
            raw = self._read(self.desc_addr + 16 * index, 16, "descriptor")
            addr, length, flags, nxt = _DESC.unpack(raw)
            if flags & VIRTQ_DESC_F_INDIRECT:
                raise VirtqueueError(
                    "virtio: indirect descriptor but VIRTIO_F_INDIRECT_DESC not negotiated"
                )
            if length == 0:
                raise VirtqueueError("virtio: zero sized buffers are not allowed")
            if addr + length > _U64_END:
                raise VirtqueueError(f"virtio: descriptor 0x{addr:x}+0x{length:x} wraps around")
            total += length
            if total > _U32_MAX:
                raise VirtqueueError("virtio: descriptor chain length exceeds 4 GiB")
            self._probe(addr, length)
            if flags & VIRTQ_DESC_F_WRITE:
                chain.writable.append((addr, length))
            elif chain.writable:
                raise VirtqueueError("Incorrect order for descriptors")
            else:
                chain.readable.append((addr, length))
            if not flags & VIRTQ_DESC_F_NEXT:
                return chain
            if nxt >= self.size:
                raise VirtqueueError(f"Desc next is {nxt}")
            index = nxt

    def _probe(self, addr: int, length: int) -> None:
        """Cheap stand-in for QEMU's dma_memory_map: both ends must be accessible."""
        try:
            self.mem.read(addr, 1)
            self.mem.read(addr + length - 1, 1)
        except GuestMemoryError as exc:
            raise VirtqueueError(
                f"virtio: bogus descriptor or out of resources (0x{addr:x}+0x{length:x}: {exc})"
            ) from exc

    def push(self, chain: Chain, written: int) -> None:
        """Publish ``chain`` as used with ``written`` bytes; used idx wraps at 2^16."""
        slot = self.used_addr + 4 + 8 * (self.used_idx % self.size)
        self._write(slot, _USED_ELEM.pack(chain.head, written & _U32_MAX), "used ring")
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self._write(self.used_addr + 2, _U16.pack(self.used_idx), "used idx")

    def save(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "desc_addr": self.desc_addr,
            "avail_addr": self.avail_addr,
            "used_addr": self.used_addr,
            "last_avail_idx": self.last_avail_idx,
            "used_idx": self.used_idx,
        }
