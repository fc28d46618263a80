"""The guest side of vmemlab's experimental x-host-request queue (queue 1), written like
guest/vmem_requests.c, on top of the transport tests' MiniDriver."""

from __future__ import annotations

import struct
from typing import Any

from vmem_fakes import FakeGuestMemory, MiniDriver, make_transport

from device import virtio_mem_requests as x
from device.virtio_mem import VirtioMemOptions
from device.virtio_mmio import (
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
    VirtioMmioTransport,
)

QSIZE = 4


class RequestDriver:
    """Queue 1 at base + 0x8000 (descriptors), 0x9000 (avail), 0xa000 (used), 0xb000 (buffers)."""

    def __init__(self, t: VirtioMmioTransport, mem: FakeGuestMemory) -> None:
        self.t, self.mem = t, mem
        base = mem.base
        self.desc, self.avail, self.used, self.bufs = (base + 0x8000, base + 0x9000,
                                                       base + 0xA000, base + 0xB000)
        self.avail_idx = 0

    def init(self) -> None:
        w = lambda off, val: self.t.write(off, 4, val)  # noqa: E731
        w(QUEUE_SEL, 1)
        w(QUEUE_NUM, QSIZE)
        for lo, hi, addr in ((QUEUE_DESC_LOW, QUEUE_DESC_HIGH, self.desc),
                             (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, self.avail),
                             (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, self.used)):
            w(lo, addr & 0xFFFFFFFF)
            w(hi, addr >> 32)
        w(QUEUE_READY, 1)

    def set_desc(self, i: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.mem.write(self.desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def send(self, request: bytes, resp_len: int = x.X_RESPONSE_SIZE) -> int:
        """One request chain; returns where the response goes."""
        head = (2 * self.avail_idx) % QSIZE
        req_at = self.bufs + 128 * head
        resp_at = req_at + 96
        self.mem.write(req_at, request)
        self.set_desc(head, req_at, len(request), 1, head + 1)
        self.set_desc(head + 1, resp_at, resp_len, 2, 0)
        slot = self.avail + 4 + 2 * (self.avail_idx % QSIZE)
        self.mem.write(slot, struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.mem.write(self.avail + 2, struct.pack("<H", self.avail_idx))
        self.t.write(QUEUE_NOTIFY, 4, 1)
        return resp_at

    def used_idx(self) -> int:
        return int(struct.unpack("<H", self.mem.read(self.used + 2, 2))[0])

    def response(self, resp_at: int) -> tuple[int, int, int]:
        return x.unpack_response(self.mem.read(resp_at, x.X_RESPONSE_SIZE))


def make_request_device(**kw: Any) -> tuple[Any, VirtioMmioTransport, MiniDriver,
                                             RequestDriver, list[int]]:
    """A device with x-guest-requests=on behind a transport, both queues set up."""
    options = kw.pop("options", VirtioMemOptions(guest_requests=True))
    h, t, mem, irqs = make_transport(options=options, **kw)
    drv = MiniDriver(t, mem)
    assert drv.init()
    req = RequestDriver(t, mem)
    req.init()
    return h, t, drv, req, irqs
