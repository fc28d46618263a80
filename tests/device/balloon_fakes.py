"""Test doubles for the balloon's true boundaries (host RAM, guest DMA memory) and a tiny
Python driver for its four queues, written the way the guest's C driver talks to it."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vmem_fakes import FakeGuestMemory

from device import virtio_balloon_protocol as b
from device.events import Event
from device.virtio_balloon import BalloonOptions, VirtioBalloonDevice
from device.virtio_mmio import (
    ACKNOWLEDGE,
    CONFIG,
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

RAM_BASE = 0x4000_0000
RAM_SIZE = 16 << 20
BUFS = RAM_BASE + 0x40000  # driver buffers (PFN arrays, stats), after the rings
PAGES = RAM_BASE + (8 << 20)  # "free pages" the fake driver hands out


@dataclass
class FakeRam:
    """Guest RAM as the host sees it: one range; records every call the device makes."""

    base: int = RAM_BASE
    size: int = RAM_SIZE
    total: int = RAM_SIZE  # what ram_size() answers
    calls: list[tuple[str, int, int]] = field(default_factory=list)

    def _pages_in(self, gpa: int, pages: int) -> int:
        end = self.base + self.size
        return sum(1 for i in range(pages) if self.base <= gpa + i * b.PAGE_SIZE < end)

    def ram_size(self) -> int:
        return self.total

    def inflate(self, gpa: int, pages: int) -> int:
        self.calls.append(("inflate", gpa, pages))
        return self._pages_in(gpa, pages)

    def deflate(self, gpa: int, pages: int) -> int:
        self.calls.append(("deflate", gpa, pages))
        return self._pages_in(gpa, pages)

    def report(self, gpa: int, size: int) -> bool:
        inside = self.base <= gpa and gpa + size <= self.base + self.size
        if inside:
            self.calls.append(("report", gpa, size))
        return inside


@dataclass
class BalloonHarness:
    dev: VirtioBalloonDevice
    ram: FakeRam
    events: list[Event]
    t: VirtioMmioTransport
    mem: FakeGuestMemory
    irqs: list[int]
    timers: list[float | None]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def make_balloon(options: BalloonOptions | None = None, *, wall: float = 1_796_287_551.0
                 ) -> BalloonHarness:
    ram = FakeRam()
    events: list[Event] = []
    dev = VirtioBalloonDevice("balloon0", options=options, backend=ram, emit=events.append,
                              wall_clock=lambda: wall)
    timers: list[float | None] = []
    dev.schedule_poll = timers.append
    mem = FakeGuestMemory(RAM_BASE, RAM_SIZE)
    irqs: list[int] = []
    t = VirtioMmioTransport(dev, mem, lambda: irqs.append(1), events.append)
    return BalloonHarness(dev, ram, events, t, mem, irqs, timers)


class BalloonDriver:
    """Guest side of the balloon: rings for every queue, buffers, the config writes."""

    QSIZE = 8

    def __init__(self, h: BalloonHarness) -> None:
        self.h, self.t, self.mem = h, h.t, h.mem
        self.avail_idx: dict[int, int] = {}
        self.next_buf = BUFS

    def ring(self, q: int) -> tuple[int, int, int]:
        base = RAM_BASE + q * 0x4000
        return base, base + 0x1000, base + 0x2000

    def w(self, off: int, val: int) -> None:
        self.t.write(off, 4, val)

    def init(self, features: int | None = None, queues: int | None = None) -> bool:
        self.w(STATUS, 0)
        self.w(STATUS, ACKNOWLEDGE)
        self.w(STATUS, ACKNOWLEDGE | DRIVER)
        if features is None:  # what Linux acks: everything but PAGE_POISON (not poisoning)
            feats = self.h.dev.device_features & ~(1 << b.VIRTIO_BALLOON_F_PAGE_POISON)
        else:
            feats = features
        for sel in (0, 1):
            self.w(DRIVER_FEATURES_SEL, sel)
            self.w(DRIVER_FEATURES, (feats >> (32 * sel)) & 0xFFFFFFFF)
        self.w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
        if not self.t.read(STATUS, 4) & FEATURES_OK:
            return False
        for q in range(len(self.h.dev.queue_sizes) if queues is None else queues):
            self.w(QUEUE_SEL, q)
            self.w(QUEUE_NUM, self.QSIZE)
            for lo, hi, addr in zip((QUEUE_DESC_LOW, QUEUE_DRIVER_LOW, QUEUE_DEVICE_LOW),
                                    (QUEUE_DESC_HIGH, QUEUE_DRIVER_HIGH, QUEUE_DEVICE_HIGH),
                                    self.ring(q), strict=True):
                self.w(lo, addr & 0xFFFFFFFF)
                self.w(hi, addr >> 32)
            self.w(QUEUE_READY, 1)
            self.avail_idx[q] = 0
        self.w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
        return True

    # ---- rings
    def set_desc(self, q: int, i: int, addr: int, length: int, flags: int, nxt: int) -> None:
        desc, _, _ = self.ring(q)
        self.mem.write(desc + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def publish(self, q: int, head: int, kick: bool = True) -> None:
        _, avail, _ = self.ring(q)
        idx = self.avail_idx[q]
        self.mem.write(avail + 4 + 2 * (idx % self.QSIZE), struct.pack("<H", head))
        self.avail_idx[q] = (idx + 1) & 0xFFFF
        self.mem.write(avail + 2, struct.pack("<H", self.avail_idx[q]))
        if kick:
            self.w(QUEUE_NOTIFY, q)

    def used_idx(self, q: int) -> int:
        _, _, used = self.ring(q)
        return int(struct.unpack("<H", self.mem.read(used + 2, 2))[0])

    def used_elem(self, q: int, n: int) -> tuple[int, int]:
        _, _, used = self.ring(q)
        head, length = struct.unpack("<II", self.mem.read(used + 4 + 8 * (n % self.QSIZE), 8))
        return int(head), int(length)

    def buffer(self, data: bytes) -> int:
        at = self.next_buf
        self.mem.write(at, data)
        self.next_buf += (len(data) + 63) // 64 * 64
        return at

    # ---- what the C driver does
    def send_pfns(self, q: int, pfns: list[int], kick: bool = True) -> None:
        """One readable buffer of 32-bit PFNs (tell_host)."""
        data = struct.pack(f"<{len(pfns)}I", *pfns)
        head = self.avail_idx[q] % self.QSIZE
        self.set_desc(q, head, self.buffer(data), len(data), 0, 0)
        self.publish(q, head, kick)

    def send_stats(self, entries: list[tuple[int, int]]) -> None:
        data = b"".join(b.STAT.pack(tag, val) for tag, val in entries)
        head = self.avail_idx[b.STATSQ] % self.QSIZE
        self.set_desc(b.STATSQ, head, self.buffer(data), len(data), 0, 0)
        self.publish(b.STATSQ, head)

    def report(self, ranges: list[tuple[int, int]]) -> None:
        """Free page report: device-writable descriptors, one per range."""
        head = 0
        for i, (addr, length) in enumerate(ranges):
            last = i == len(ranges) - 1
            self.set_desc(b.REPORTINGQ, i, addr, length, 2 | (0 if last else 1),
                          0 if last else i + 1)
        self.publish(b.REPORTINGQ, head)

    def write_actual(self, pages: int, size: int = 4) -> None:
        for i in range(0, 4, size):
            self.t.write(CONFIG + b.ACTUAL + i, size, (pages >> (8 * i)) & ((1 << 8 * size) - 1))

    def config(self, offset: int) -> int:
        return self.t.read(CONFIG + offset, 4)


def ready(options: BalloonOptions | None = None) -> tuple[BalloonHarness, BalloonDriver]:
    h = make_balloon(options)
    drv = BalloonDriver(h)
    assert drv.init()
    return h, drv


def page_pfn(i: int) -> int:
    return (PAGES >> b.PFN_SHIFT) + i
