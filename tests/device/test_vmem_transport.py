"""virtio-mmio v2 transport and split virtqueue, driven like a guest driver would.

Malformed rings and requests must break the device (NEEDS_RESET + config interrupt +
DeviceBroken event) and never raise out of the MMIO handlers.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vmem_fakes import ADDR, BS, FakeGuestMemory, Harness, MiniDriver, make_transport

from device import virtio_mem_protocol as p
from device.errors import VirtqueueError
from device.events import DeviceBroken, DeviceReset
from device.virtio_mem import VirtioMemOptions
from device.virtio_mmio import (
    ACKNOWLEDGE,
    CONFIG,
    CONFIG_GENERATION,
    DEVICE_FEATURES,
    DEVICE_FEATURES_SEL,
    DEVICE_ID,
    DEVICE_NEEDS_RESET,
    DRIVER,
    DRIVER_OK,
    FEATURES_OK,
    INTERRUPT_ACK,
    INTERRUPT_STATUS,
    MAGIC,
    QUEUE_NOTIFY,
    QUEUE_NUM,
    QUEUE_NUM_MAX,
    QUEUE_READY,
    QUEUE_SEL,
    STATUS,
    VENDOR,
    VERSION_REG,
    VirtioMmioTransport,
)
from device.virtqueue import SplitVirtqueue, check_queue_layout

PLUG = p.VIRTIO_MEM_REQ_PLUG


def ready() -> tuple[Harness, VirtioMmioTransport, FakeGuestMemory, list[int], MiniDriver]:
    h, t, mem, irqs = make_transport()
    drv = MiniDriver(t, mem)
    assert drv.init()
    return h, t, mem, irqs, drv


def broken_reason(h: Harness) -> str:
    ev = [e for e in h.events if isinstance(e, DeviceBroken)]
    assert len(ev) == 1
    return ev[0].reason


def assert_broken(h: Harness, t: VirtioMmioTransport, irqs: list[int]) -> str:
    assert t.read(STATUS, 4) & DEVICE_NEEDS_RESET
    assert t.read(INTERRUPT_STATUS, 4) & 2
    assert irqs
    assert h.dev.broken
    return broken_reason(h)


# ---------------------------------------------------------------------------- registers


def test_identity_registers() -> None:
    _, t, _, _ = make_transport()
    assert t.read(MAGIC, 4) == 0x74726976
    assert t.read(VERSION_REG, 4) == 2
    assert t.read(DEVICE_ID, 4) == 24
    assert t.read(VENDOR, 4) == 0x554D4551
    assert t.read(QUEUE_NUM_MAX, 4) == 128
    assert t.read(MAGIC, 1) == 0x76  # lenient narrow read
    assert t.read(0x0F0, 4) == 0  # unknown register


def test_device_features_window() -> None:
    h, t, _, _ = make_transport()
    t.write(DEVICE_FEATURES_SEL, 4, 0)
    lo = t.read(DEVICE_FEATURES, 4)
    t.write(DEVICE_FEATURES_SEL, 4, 1)
    hi = t.read(DEVICE_FEATURES, 4)
    assert (hi << 32) | lo == h.dev.device_features
    t.write(DEVICE_FEATURES_SEL, 4, 2)
    assert t.read(DEVICE_FEATURES, 4) == 0


def test_config_space_reads_delegate_and_writes_are_ignored() -> None:
    h, t, _, _ = make_transport()
    assert t.read(CONFIG + 0, 4) == BS
    assert t.read(CONFIG + 16, 4) == ADDR & 0xFFFFFFFF
    assert t.read(CONFIG + 20, 4) == ADDR >> 32
    before = h.dev.config_bytes()
    t.write(CONFIG + 48, 4, 0xFFFFFFFF)
    assert h.dev.config_bytes() == before


def test_queue_sel_other_than_zero_has_no_queue() -> None:
    _, t, _, _ = make_transport()
    t.write(QUEUE_SEL, 4, 1)
    assert t.read(QUEUE_NUM_MAX, 4) == 0
    t.write(QUEUE_READY, 4, 1)
    assert t.read(QUEUE_READY, 4) == 0


def test_non_32bit_register_writes_are_ignored() -> None:
    _, t, _, _ = make_transport()
    t.write(STATUS, 1, 1)
    t.write(STATUS, 2, 1)
    assert t.read(STATUS, 4) == 0


# ---------------------------------------------------------------------------- init + requests


def test_full_driver_init_sequence() -> None:
    h, t, _, _, _ = ready()
    assert t.read(STATUS, 4) == ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    assert t.read(QUEUE_READY, 4) == 1
    assert h.dev.driver_features == h.dev.device_features
    assert DeviceReset("vmem0", "device") in h.events


def test_features_ok_refused_without_unplugged_inaccessible() -> None:
    h, t, mem, _ = make_transport(options=VirtioMemOptions(unplugged_inaccessible=True))
    drv = MiniDriver(t, mem)
    feats = h.dev.device_features & ~(1 << p.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE)
    assert not drv.init(features=feats)
    assert not t.read(STATUS, 4) & FEATURES_OK
    assert h.dev.driver_features == 0


def test_plug_through_the_ring() -> None:
    h, t, _, irqs, drv = ready()
    resp_at = drv.submit(p.pack_request(PLUG, ADDR, 64))
    assert drv.used_idx() == 1
    assert drv.used_elem(0) == (0, 10)
    assert drv.response(resp_at) == (p.VIRTIO_MEM_RESP_ACK, 0)
    assert h.dev.plugged_size == 64 * BS
    assert t.read(INTERRUPT_STATUS, 4) == 1 and irqs == [1]
    t.write(INTERRUPT_ACK, 4, 1)
    assert t.read(INTERRUPT_STATUS, 4) == 0


def test_batch_of_requests_raises_one_interrupt() -> None:
    _h, t, _, irqs, drv = ready()
    a = drv.submit(p.pack_request(PLUG, ADDR, 1), kick=False)
    b = drv.submit(p.pack_request(PLUG, ADDR + BS, 1), kick=False)
    c = drv.submit(p.pack_request(p.VIRTIO_MEM_REQ_STATE, ADDR, 2), kick=False)
    t.write(QUEUE_NOTIFY, 4, 0)
    assert drv.used_idx() == 3 and irqs == [1]
    assert drv.response(a)[0] == drv.response(b)[0] == 0
    assert drv.response(c) == (0, p.VIRTIO_MEM_STATE_PLUGGED)


def test_no_interrupt_flag_suppresses_used_interrupt() -> None:
    _, t, mem, irqs, drv = ready()
    mem.write(drv.avail, struct.pack("<H", 1))
    drv.submit(p.pack_request(PLUG, ADDR, 1))
    assert drv.used_idx() == 1 and irqs == [] and t.read(INTERRUPT_STATUS, 4) == 0


def test_used_index_wraps_at_2_16() -> None:
    _h, t, _, _, drv = ready()
    assert t.vq is not None
    t.vq.last_avail_idx = t.vq.used_idx = 0xFFFF
    drv.avail_idx = 0xFFFF
    drv.submit(p.pack_request(p.VIRTIO_MEM_REQ_STATE, ADDR, 1))
    assert drv.used_idx() == 0 and t.vq.last_avail_idx == 0


def test_config_change_interrupt_and_generation() -> None:
    h, t, _, irqs, _ = ready()
    gen = t.read(CONFIG_GENERATION, 4)
    h.dev.set_requested_size(8 * BS)
    assert t.read(CONFIG_GENERATION, 4) != gen
    assert t.read(INTERRUPT_STATUS, 4) & 2 and irqs == [1]
    assert t.read(CONFIG + 48, 4) == 8 * BS


def test_config_change_before_driver_ok_bumps_generation_without_interrupt() -> None:
    h, t, _, irqs = make_transport()
    gen = t.read(CONFIG_GENERATION, 4)
    h.dev.set_requested_size(8 * BS)
    assert t.read(CONFIG_GENERATION, 4) != gen and irqs == []


def test_status_zero_resets_transport_but_not_blocks() -> None:
    h, t, _, _, drv = ready()
    drv.submit(p.pack_request(PLUG, ADDR, 4))
    t.write(STATUS, 4, 0)
    assert t.read(STATUS, 4) == 0 and t.read(QUEUE_READY, 4) == 0 and t.vq is None
    assert h.dev.plugged_size == 4 * BS and h.dev.driver_features == 0


def test_reinit_after_reset_restarts_ring_indices() -> None:
    h, t, mem, _, drv = ready()
    drv.submit(p.pack_request(PLUG, ADDR, 1))
    mem.ram[:] = bytes(len(mem.ram))
    drv2 = MiniDriver(t, mem)
    assert drv2.init()
    resp = drv2.submit(p.pack_request(PLUG, ADDR + BS, 1))
    assert drv2.response(resp)[0] == 0 and h.dev.plugged_size == 2 * BS


def test_reset_state_for_system_reset() -> None:
    _h, t, _, _, _ = ready()
    t.reset_state()
    assert t.read(STATUS, 4) == 0 and t.vq is None and t.read(INTERRUPT_STATUS, 4) == 0


# ---------------------------------------------------------------------------- malformed


def test_bad_head_index_breaks_device() -> None:
    h, t, _, irqs, drv = ready()
    drv.publish(200)
    assert assert_broken(h, t, irqs) == "Guest says index 200 is available"


def test_descriptor_loop_breaks_device() -> None:
    h, t, _mem, irqs, drv = ready()
    drv.set_desc(0, drv.bufs, 24, 1, 1)
    drv.set_desc(1, drv.bufs, 24, 1, 0)
    drv.publish(0)
    assert assert_broken(h, t, irqs) == "Looped descriptor"


def test_next_out_of_range_breaks_device() -> None:
    h, t, _, irqs, drv = ready()
    drv.set_desc(0, drv.bufs, 24, 1, 77)
    drv.publish(0)
    assert assert_broken(h, t, irqs) == "Desc next is 77"


def test_huge_len_breaks_device() -> None:
    h, t, _, irqs, drv = ready()
    drv.set_desc(0, drv.bufs, 0xFFFFFFFF, 0, 0)
    drv.publish(0)
    assert "bogus descriptor" in assert_broken(h, t, irqs)


def test_out_of_range_buffer_breaks_device() -> None:
    h, t, _, irqs, drv = ready()
    drv.set_desc(0, 0x10, 24, 1, 1)
    drv.set_desc(1, drv.bufs, 10, 2, 0)
    drv.publish(0)
    assert "bogus descriptor" in assert_broken(h, t, irqs)


def test_avail_idx_jump_breaks_device() -> None:
    h, t, mem, irqs, drv = ready()
    mem.write(drv.avail + 2, struct.pack("<H", 100))
    t.write(QUEUE_NOTIFY, 4, 0)
    assert assert_broken(h, t, irqs) == "Guest moved used index from 0 to 100"


def test_writable_before_readable_breaks_device() -> None:
    h, t, _, irqs, drv = ready()
    drv.set_desc(0, drv.bufs, 10, 2 | 1, 1)
    drv.set_desc(1, drv.bufs + 32, 24, 0, 0)
    drv.publish(0)
    assert assert_broken(h, t, irqs) == "Incorrect order for descriptors"


def test_indirect_descriptor_breaks_device() -> None:
    h, t, _, irqs, drv = ready()
    drv.set_desc(0, drv.bufs, 32, 4, 0)
    drv.publish(0)
    assert "VIRTIO_F_INDIRECT_DESC" in assert_broken(h, t, irqs)


def test_short_request_breaks_device() -> None:
    h, t, _, irqs, drv = ready()
    drv.submit(b"\0" * 16)
    reason = assert_broken(h, t, irqs)
    assert reason == "virtio-mem protocol violation: invalid request size: 24"
    assert drv.used_idx() == 0


def test_response_buffer_too_small_breaks_device() -> None:
    h, t, _, irqs, drv = ready()
    drv.submit(p.pack_request(PLUG, ADDR, 1), resp_len=8)
    reason = assert_broken(h, t, irqs)
    assert reason == "virtio-mem protocol violation: not enough space for response: 8"
    assert h.dev.plugged_size == 0


def test_unknown_type_breaks_device_and_later_notifies_are_ignored() -> None:
    h, t, _, irqs, drv = ready()
    drv.submit(p.pack_request(42))
    assert assert_broken(h, t, irqs) == "virtio-mem protocol violation: unknown request type: 42"
    drv.submit(p.pack_request(PLUG, ADDR, 1))
    assert h.dev.plugged_size == 0 and drv.used_idx() == 0
    t.write(STATUS, 4, 7)  # the driver cannot clear NEEDS_RESET ...
    assert t.read(STATUS, 4) & DEVICE_NEEDS_RESET
    t.write(STATUS, 4, 0)  # ... only a reset does
    assert not h.dev.broken and t.read(STATUS, 4) == 0


def test_invalid_queue_setup_breaks_device_on_ready() -> None:
    h, t, _, _irqs = make_transport()
    t.write(STATUS, 4, 1)
    t.write(QUEUE_NUM, 4, 3)
    t.write(QUEUE_READY, 4, 1)
    assert "power of two" in broken_reason(h)
    assert t.read(QUEUE_READY, 4) == 0


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        ((256, 0, 0, 0), "power of two"),
        ((8, 8, 0, 0), "descriptor table"),
        ((8, 0, 1, 0), "avail"),
        ((8, 0, 0, 2), "used"),
    ],
)
def test_queue_layout_checks(args: tuple[int, int, int, int], msg: str) -> None:
    with pytest.raises(VirtqueueError, match=msg):
        check_queue_layout(*args)


def test_chain_read_write_scatter_gather() -> None:
    mem = FakeGuestMemory()
    vq = SplitVirtqueue(mem, 4, mem.base, mem.base + 0x100, mem.base + 0x200)
    b = mem.base + 0x400
    mem.write(b, b"abcdefgh")
    for i, (addr, ln, fl, nx) in enumerate(
        [(b, 3, 1, 1), (b + 3, 5, 1, 2), (b + 0x40, 4, 3, 3), (b + 0x80, 4, 2, 0)]
    ):
        mem.write(mem.base + 16 * i, struct.pack("<QIHH", addr, ln, fl, nx))
    mem.write(mem.base + 0x100, struct.pack("<HHH", 0, 1, 0))
    chain = vq.pop()
    assert chain is not None and vq.pop() is None
    assert chain.read_all() == b"abcdefgh" and chain.read(4) == b"abcd"
    assert (chain.readable_len, chain.writable_len) == (8, 8)
    assert chain.write(b"0123456789") == 8
    assert mem.read(b + 0x40, 4) == b"0123" and mem.read(b + 0x80, 4) == b"4567"


# ---------------------------------------------------------------------------- fuzz


BUFS = FakeGuestMemory().base + 0x3000
request_bytes = st.builds(
    lambda t, b, n, tail: p.pack_request(t, ADDR + b * BS, n) + tail,
    st.integers(0, 4),
    st.integers(0, 300),
    st.integers(0, 70),
    st.binary(max_size=40),
)
desc_strategy = st.tuples(
    st.one_of(st.integers(BUFS, BUFS + 0x400), st.integers(0, 2**64 - 1)),
    st.one_of(st.integers(1, 64), st.integers(0, 2**32 - 1)),
    st.integers(0, 7),
    st.integers(0, 12),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(st.binary(max_size=256), request_bytes),
    st.integers(0, 0xFFFF),
    st.integers(0, 12),
    st.lists(desc_strategy, max_size=10),
)
def test_random_ring_contents_never_raise(
    noise: bytes, avail_idx: int, head: int, descs: list[tuple[int, int, int, int]]
) -> None:
    h, t, mem, _, drv = ready()
    mem.write(drv.bufs, noise)
    for i, d in enumerate(descs):
        mem.write(drv.desc + 16 * i, struct.pack("<QIHH", *d))
    mem.write(drv.avail, struct.pack("<HHHH", 0, avail_idx, head, head))
    t.write(QUEUE_NOTIFY, 4, 0)
    t.write(QUEUE_NOTIFY, 4, 0)
    assert h.dev.plugged_size == h.dev.bitmap.count(1) * BS
    assert drv.used_idx() <= 8


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 0x140), st.sampled_from([1, 2, 4, 8, 3]), st.integers(0, 2**32 - 1)
        ),
        max_size=40,
    )
)
def test_random_mmio_accesses_never_raise(accesses: list[tuple[int, int, int]]) -> None:
    h, t, _, _ = make_transport()
    for off, size, val in accesses:
        t.write(off, size, val)
        t.read(off, size)
    assert h.dev.plugged_size == h.dev.bitmap.count(1) * BS
