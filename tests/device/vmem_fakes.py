"""Test doubles for the device layer's true boundaries: host backend and guest DMA memory.

Also a tiny Python virtio-mmio driver, so transport tests read like the guest's C code.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from device import virtio_mem_protocol as p
from device.errors import BackendError, GuestMemoryError
from device.events import Event
from device.virtio_mem import MiB, VirtioMemDevice, VirtioMemOptions
from device.virtio_mmio import (
    ACKNOWLEDGE,
    DRIVER,
    DRIVER_FEATURES,
    DRIVER_FEATURES_SEL,
    DRIVER_OK,
    FEATURES_OK,
    QUEUE_DESC_HIGH,
    QUEUE_DESC_LOW,
    QUEUE_DEVICE_HIGH,
    QUEUE_DEVICE_LOW,
    QUEUE_DRIVER_HIGH,
    QUEUE_DRIVER_LOW,
    QUEUE_NOTIFY,
    QUEUE_NUM,
    QUEUE_READY,
    QUEUE_SEL,
    STATUS,
    VirtioMmioTransport,
)

BS = 2 * MiB
ADDR = 0x1_0000_0000
REGION = 256 * BS  # 512 MiB


@dataclass
class RecordingBackend:
    """Records plug/unplug calls; ``fail_plug``/``fail_unplug`` make the next calls fail."""

    calls: list[tuple[str, int, int]] = field(default_factory=list)
    fail_plug: bool = False
    fail_unplug: bool = False
    fail_unplug_after: int | None = None  # succeed this many unplugs, then fail

    def plug(self, offset: int, size: int) -> None:
        if self.fail_plug:
            raise BackendError("prealloc failed")
        self.calls.append(("plug", offset, size))

    def unplug(self, offset: int, size: int) -> None:
        if self.fail_unplug:
            raise BackendError("discard failed")
        if self.fail_unplug_after is not None:
            if self.fail_unplug_after <= 0:
                raise BackendError("discard failed")
            self.fail_unplug_after -= 1
        self.calls.append(("unplug", offset, size))


@dataclass
class Harness:
    dev: VirtioMemDevice
    backend: RecordingBackend
    events: list[Event]
    notifications: list[int]

    def req(self, req_type: int, addr: int = ADDR, nb: int = 1) -> tuple[str, int]:
        resp, state = p.unpack_response(self.dev.handle_request(p.pack_request(req_type, addr, nb)))
        return p.RESPONSE_NAMES[resp], state

    def plug(self, block: int, nb: int = 1) -> str:
        return self.req(p.VIRTIO_MEM_REQ_PLUG, ADDR + block * BS, nb)[0]

    def unplug(self, block: int, nb: int = 1) -> str:
        return self.req(p.VIRTIO_MEM_REQ_UNPLUG, ADDR + block * BS, nb)[0]

    def unplug_all(self) -> str:
        return self.req(p.VIRTIO_MEM_REQ_UNPLUG_ALL, 0, 0)[0]

    def state(self, block: int, nb: int = 1) -> tuple[str, str | None]:
        resp, state = self.req(p.VIRTIO_MEM_REQ_STATE, ADDR + block * BS, nb)
        return resp, (p.STATE_NAMES[state] if resp == "ACK" else None)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def make_device(
    *,
    requested: int = 64 * BS,
    region: int = REGION,
    options: VirtioMemOptions | None = None,
    node_id: int = 0,
) -> Harness:
    backend = RecordingBackend()
    events: list[Event] = []
    notes: list[int] = []
    dev = VirtioMemDevice(
        "vmem0",
        addr=ADDR,
        region_size=region,
        block_size=BS,
        node_id=node_id,
        requested_size=requested,
        options=options,
        backend=backend,
        emit=events.append,
        notify_config=lambda: notes.append(1),
    )
    return Harness(dev, backend, events, notes)


class FakeGuestMemory:
    """A bytearray of guest RAM at ``base``; anything outside is not DMA-accessible."""

    def __init__(self, base: int = 0x4000_0000, size: int = 1 << 20) -> None:
        self.base = base
        self.ram = bytearray(size)

    def _off(self, gpa: int, size: int) -> int:
        off = gpa - self.base
        if size < 0 or off < 0 or off + size > len(self.ram):
            raise GuestMemoryError(f"0x{gpa:x}+0x{size:x} not DMA-accessible")
        return off

    def read(self, gpa: int, size: int) -> bytes:
        off = self._off(gpa, size)
        return bytes(self.ram[off : off + size])

    def write(self, gpa: int, data: bytes) -> None:
        off = self._off(gpa, len(data))
        self.ram[off : off + len(data)] = data


class MiniDriver:
    """The guest side of virtio-mmio + one split ring, written like the C driver would."""

    def __init__(self, t: VirtioMmioTransport, mem: FakeGuestMemory, qsize: int = 8) -> None:
        self.t, self.mem, self.qsize = t, mem, qsize
        base = mem.base
        self.desc = base
        self.avail = base + 0x1000
        self.used = base + 0x2000
        self.bufs = base + 0x3000
        self.avail_idx = 0
        self.used_seen = 0

    def w(self, off: int, val: int) -> None:
        self.t.write(off, 4, val)

    def init(self, features: int | None = None) -> bool:
        self.w(STATUS, 0)
        self.w(STATUS, ACKNOWLEDGE)
        self.w(STATUS, ACKNOWLEDGE | DRIVER)
        feats = self.t.device.device_features if features is None else features
        for sel in (0, 1):
            self.w(DRIVER_FEATURES_SEL, sel)
            self.w(DRIVER_FEATURES, (feats >> (32 * sel)) & 0xFFFFFFFF)
        self.w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
        if not self.t.read(STATUS, 4) & FEATURES_OK:
            return False
        self.w(QUEUE_SEL, 0)
        self.w(QUEUE_NUM, self.qsize)
        for lo, hi, addr in (
            (QUEUE_DESC_LOW, QUEUE_DESC_HIGH, self.desc),
            (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, self.avail),
            (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, self.used),
        ):
            self.w(lo, addr & 0xFFFFFFFF)
            self.w(hi, addr >> 32)
        self.w(QUEUE_READY, 1)
        self.w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
        return True

    def set_desc(self, i: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.mem.write(self.desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def publish(self, head: int, kick: bool = True) -> None:
        slot = self.avail + 4 + 2 * (self.avail_idx % self.qsize)
        self.mem.write(slot, struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.mem.write(self.avail + 2, struct.pack("<H", self.avail_idx))
        if kick:
            self.w(QUEUE_NOTIFY, 0)

    def submit(self, request: bytes, resp_len: int = p.RESPONSE_SIZE, kick: bool = True) -> int:
        """Two-descriptor chain: request (readable) then response (writable)."""
        head = (2 * self.avail_idx) % self.qsize
        req_at = self.bufs + 64 * head
        resp_at = req_at + 32
        self.mem.write(req_at, request)
        self.set_desc(head, req_at, len(request), 1, head + 1)
        self.set_desc(head + 1, resp_at, resp_len, 2, 0)
        self.publish(head, kick)
        return resp_at

    def used_idx(self) -> int:
        return int(struct.unpack("<H", self.mem.read(self.used + 2, 2))[0])

    def used_elem(self, n: int) -> tuple[int, int]:
        at = self.used + 4 + 8 * (n % self.qsize)
        head, length = struct.unpack("<II", self.mem.read(at, 8))
        return int(head), int(length)

    def response(self, resp_at: int) -> tuple[int, int]:
        return p.unpack_response(self.mem.read(resp_at, p.RESPONSE_SIZE))


def make_transport(**kw: Any) -> tuple[Harness, VirtioMmioTransport, FakeGuestMemory, list[int]]:
    """A device (``kw`` as for :func:`make_device`) behind a virtio-mmio transport."""
    h = make_device(**kw)
    mem = FakeGuestMemory()
    irqs: list[int] = []
    t = VirtioMmioTransport(h.dev, mem, lambda: irqs.append(1), h.events.append)
    return h, t, mem, irqs
