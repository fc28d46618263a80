"""Hypothesis over the balloon's queues: hostile descriptors, rings, PFN lists, stats buffers,
reports and config writes are contained -- never a Python exception out of the MMIO handlers,
at worst a broken device (NEEDS_RESET), and a reset driver gets a working device back."""

from __future__ import annotations

import struct

from balloon_fakes import RAM_BASE, RAM_SIZE, BalloonDriver, make_balloon, page_pfn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device import virtio_balloon_protocol as b
from device.virtio_balloon import BalloonOptions
from device.virtio_mmio import CONFIG, DEVICE_NEEDS_RESET, QUEUE_NOTIFY, STATUS

ADDRS = st.one_of(st.integers(RAM_BASE, RAM_BASE + RAM_SIZE - 1),
                  st.integers(0, (1 << 64) - 1), st.sampled_from([0, RAM_BASE - 4096]))
DESC = st.tuples(ADDRS, st.integers(0, (1 << 32) - 1) | st.integers(0, 8192),
                 st.integers(0, 0xFFFF) | st.sampled_from([0, 1, 2, 3, 4]),
                 st.integers(0, 0xFFFF) | st.integers(0, 8))
PFNS = st.lists(st.integers(0, (1 << 32) - 1) | st.integers(page_pfn(0), page_pfn(64)),
                min_size=1, max_size=300)  # (an empty buffer is a ring error)
OPTIONS = st.builds(BalloonOptions, deflate_on_oom=st.booleans(),
                    free_page_reporting=st.booleans(), page_poison=st.booleans(),
                    must_tell_host=st.booleans())


def _works_after_reset(drv: BalloonDriver) -> None:
    """A fresh driver on the same device inflates a page: the machine keeps working."""
    h = drv.h
    h.mem.ram[: 0x40000] = bytes(0x40000)
    fresh = BalloonDriver(h)
    assert fresh.init()
    before = h.dev.inflated_pages
    fresh.send_pfns(b.INFLATEQ, [page_pfn(1)])
    assert fresh.used_idx(b.INFLATEQ) == 1 and h.dev.inflated_pages == before + 1
    assert not h.dev.broken


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options=OPTIONS, queue=st.integers(0, 5), descs=st.lists(DESC, min_size=1, max_size=8),
       heads=st.lists(st.integers(0, 0xFFFF) | st.integers(0, 8), min_size=1, max_size=6),
       avail_jump=st.integers(0, 0xFFFF) | st.none(), payload=st.binary(max_size=512))
def test_hostile_rings_are_contained(options: BalloonOptions, queue: int, descs: list,
                                     heads: list[int], avail_jump: int | None,
                                     payload: bytes) -> None:
    h = make_balloon(options)
    drv = BalloonDriver(h)
    assert drv.init()
    q = min(queue, len(h.dev.queue_sizes) - 1)
    h.mem.write(drv.next_buf, payload)
    for i, (addr, length, flags, nxt) in enumerate(descs):
        drv.set_desc(q, i, addr, length, flags, nxt)
    for head in heads:
        drv.publish(q, head, kick=False)
    if avail_jump is not None:
        _, avail, _ = drv.ring(q)
        h.mem.write(avail + 2, struct.pack("<H", avail_jump))
    h.t.write(QUEUE_NOTIFY, 4, queue)  # may name a queue that does not exist
    h.dev.stats_timer_expired()
    if h.dev.broken:
        assert h.t.read(STATUS, 4) & DEVICE_NEEDS_RESET
    _works_after_reset(drv)


@settings(max_examples=150, deadline=None)
@given(pfns=PFNS, deflate=st.booleans())
def test_any_pfn_list_is_handled_and_used(pfns: list[int], deflate: bool) -> None:
    h = make_balloon()
    drv = BalloonDriver(h)
    assert drv.init()
    q = b.DEFLATEQ if deflate else b.INFLATEQ
    drv.send_pfns(q, pfns)
    assert drv.used_idx(q) == 1 and not h.dev.broken
    in_ram = sum(1 for p in pfns if RAM_BASE <= p << 12 < RAM_BASE + RAM_SIZE)
    done = h.dev.deflated_pages if deflate else h.dev.inflated_pages
    assert done == in_ram and h.dev.ignored_pfns == len(pfns) - in_ram


@settings(max_examples=150, deadline=None)
@given(entries=st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, (1 << 64) - 1)),
                        max_size=80), tail=st.binary(max_size=9))
def test_any_stats_buffer_is_taken(entries: list[tuple[int, int]], tail: bytes) -> None:
    h = make_balloon()
    drv = BalloonDriver(h)
    assert drv.init()
    data = b"".join(b.STAT.pack(t, v) for t, v in entries) + tail
    head = 0
    drv.set_desc(b.STATSQ, head, drv.buffer(data or b"\0"), len(data) or 1, 0, 0)
    drv.publish(b.STATSQ, head)
    assert h.dev.stats_held and not h.dev.broken
    stats = h.dev.guest_stats()["stats"]
    assert len(stats) == b.VIRTIO_BALLOON_S_NR
    assert all(0 <= v < 1 << 64 for v in stats.values())


@settings(max_examples=200, deadline=None)
@given(writes=st.lists(st.tuples(st.integers(-8, 40), st.sampled_from([1, 2, 3, 4, 8]),
                                 st.integers(0, (1 << 64) - 1)), max_size=12),
       poison=st.booleans())
def test_any_config_access_is_contained(writes: list[tuple[int, int, int]], poison: bool
                                        ) -> None:
    h = make_balloon(BalloonOptions(page_poison=poison))
    drv = BalloonDriver(h)
    assert drv.init(features=h.dev.device_features)
    for offset, size, value in writes:
        h.t.write(CONFIG + offset, size, value)
        h.t.read(CONFIG + offset, size)
    assert 0 <= h.dev.actual < 1 << 32 and h.dev.num_pages == 0
    assert not h.dev.broken
