"""The balloon device as QEMU 7.2's virtio-balloon behaves (hw/virtio/virtio-balloon.c):
config space, targets, the four queues, stats polling, resets and migration state."""

from __future__ import annotations

import json

import pytest
from balloon_fakes import PAGES, RAM_BASE, RAM_SIZE, make_balloon, page_pfn, ready

from device import virtio_balloon_protocol as b
from device.errors import ConfigError, MigrationError
from device.events import BalloonActual, ConfigChange, DeviceReset
from device.virtio_balloon import MAX_PFNS_PER_BUFFER, BalloonOptions
from device.virtio_mmio import (
    CONFIG,
    DEVICE_FEATURES,
    DEVICE_FEATURES_SEL,
    DEVICE_ID,
    INTERRUPT_STATUS,
    QUEUE_NUM_MAX,
    QUEUE_SEL,
    STATUS,
)

MiB = 1 << 20


def test_identity_and_queues_as_qemu_creates_them() -> None:
    h = make_balloon()
    assert h.t.read(DEVICE_ID, 4) == 5
    sizes = []
    for q in range(5):
        h.t.write(QUEUE_SEL, 4, q)
        sizes.append(h.t.read(QUEUE_NUM_MAX, 4))
    assert sizes == [128, 128, 128, 0, 0]
    h2 = make_balloon(BalloonOptions(free_page_reporting=True))
    h2.t.write(QUEUE_SEL, 4, 3)
    assert h2.t.read(QUEUE_NUM_MAX, 4) == 32  # reporting_vq is queue 3 (QEMU: num_vqs 4)


def test_features_as_qemu_offers_them() -> None:
    h = make_balloon()
    h.t.write(DEVICE_FEATURES_SEL, 4, 0)
    low = h.t.read(DEVICE_FEATURES, 4)
    # run A of reference/11_balloon.txt: PAGE_POISON and STATS_VQ (and VERSION_1)
    assert low == (1 << b.VIRTIO_BALLOON_F_STATS_VQ) | (1 << b.VIRTIO_BALLOON_F_PAGE_POISON)
    h.t.write(DEVICE_FEATURES_SEL, 4, 1)
    assert h.t.read(DEVICE_FEATURES, 4) == 1
    run_b = make_balloon(BalloonOptions(deflate_on_oom=True, free_page_reporting=True))
    assert run_b.dev.device_features & 0xFF == 0b110110


def test_config_space_size_follows_page_poison() -> None:
    assert make_balloon().dev.config_size == 16
    no_poison = make_balloon(BalloonOptions(page_poison=False))
    assert no_poison.dev.config_size == 8
    assert no_poison.t.read(CONFIG + 12, 4) == 0


def test_target_sets_num_pages_and_notifies_even_when_unchanged() -> None:
    h, drv = ready()
    h.dev.set_target(RAM_SIZE // 2)
    assert drv.config(b.NUM_PAGES) == RAM_SIZE // 2 // 4096
    assert h.t.read(INTERRUPT_STATUS, 4) & 2
    irqs = len(h.irqs)
    h.dev.set_target(RAM_SIZE // 2)
    assert len(h.irqs) == irqs + 1
    changes = [e for e in h.events if isinstance(e, ConfigChange)]
    assert [c.fields for c in changes] == [{"num_pages": 2048}, {}]


def test_target_above_ram_is_clamped_and_zero_changes_nothing() -> None:
    h, drv = ready()
    h.dev.set_target(RAM_SIZE // 4)
    h.dev.set_target(2 * RAM_SIZE)  # QEMU: "balloon 2048" on 1G: deflate fully
    assert drv.config(b.NUM_PAGES) == 0
    h.dev.set_target(RAM_SIZE // 4)
    notes = len(h.irqs)
    h.dev.set_target(0)
    assert drv.config(b.NUM_PAGES) == RAM_SIZE * 3 // 4 // 4096 and len(h.irqs) == notes
    with pytest.raises(ConfigError, match="Parameter 'target' expects a size"):
        h.dev.set_target(-1)


def test_actual_written_by_the_driver_is_a_balloon_change_in_guest_bytes() -> None:
    h, drv = ready()
    drv.write_actual(256)
    drv.write_actual(256)  # unchanged: no event
    drv.write_actual(512)
    changes = [e for e in h.events if isinstance(e, BalloonActual)]
    assert [(c.actual, c.guest_size) for c in changes] == [
        (256, RAM_SIZE - MiB), (512, RAM_SIZE - 2 * MiB)]
    assert h.dev.guest_size == RAM_SIZE - 2 * MiB


def test_driver_cannot_write_num_pages() -> None:
    h, drv = ready()
    h.dev.set_target(RAM_SIZE // 2)
    h.t.write(CONFIG + b.NUM_PAGES, 4, 7)
    assert drv.config(b.NUM_PAGES) == RAM_SIZE // 2 // 4096 and h.dev.actual == 0


def test_consecutive_pfns_are_one_discard_and_bad_pfns_are_skipped() -> None:
    h, drv = ready()
    outside = (RAM_BASE + RAM_SIZE) >> 12
    drv.send_pfns(b.INFLATEQ, [page_pfn(0), page_pfn(1), page_pfn(2), 3, outside, page_pfn(9)])
    assert h.ram.calls == [("inflate", PAGES, 3), ("inflate", 3 << 12, 1),
                           ("inflate", outside << 12, 1), ("inflate", PAGES + 9 * 4096, 1)]
    assert (h.dev.inflated_pages, h.dev.ignored_pfns) == (4, 2)
    assert drv.used_idx(b.INFLATEQ) == 1  # a bad address never breaks the device
    assert not h.dev.broken


def test_falling_runs_are_one_range_too() -> None:
    """A driver deflates its newest pages first: PFNs falling one by one."""
    h, drv = ready()
    drv.send_pfns(b.DEFLATEQ, [page_pfn(i) for i in (9, 8, 7, 3, 4, 5, 1)])
    assert h.ram.calls == [("deflate", PAGES + 7 * 4096, 3), ("deflate", PAGES + 3 * 4096, 3),
                           ("deflate", PAGES + 4096, 1)]


def test_trailing_bytes_and_writable_descriptors_are_ignored() -> None:
    h, drv = ready()
    data = b"".join(page_pfn(i).to_bytes(4, "little") for i in range(2)) + b"\x01\x02"
    at = drv.buffer(data)
    drv.set_desc(b.INFLATEQ, 0, at, len(data), 1, 1)
    drv.set_desc(b.INFLATEQ, 1, drv.buffer(bytes(16)), 16, 2, 0)
    drv.publish(b.INFLATEQ, 0)
    assert h.ram.calls == [("inflate", PAGES, 2)] and drv.used_elem(b.INFLATEQ, 0) == (0, 0)


def test_one_buffer_is_read_only_up_to_the_bound() -> None:
    h, drv = ready()
    drv.send_pfns(b.INFLATEQ, [page_pfn(0)] * (MAX_PFNS_PER_BUFFER + 100))
    assert h.dev.inflated_pages == MAX_PFNS_PER_BUFFER and h.dev.ignored_pfns == 100


def test_a_second_stats_buffer_returns_the_first() -> None:
    h, drv = ready()
    drv.send_stats([(4, 1)])
    drv.send_stats([(4, 2)])  # breaks "at most one buffer": QEMU gives the old one back
    assert drv.used_idx(b.STATSQ) == 1 and h.dev.stats_held
    assert h.dev.guest_stats()["stats"]["stat-free-memory"] == 2


@pytest.mark.parametrize(("value", "text"), [(-1, "timer value must be greater than zero"),
                                              (5_000_000_000, "timer value is too big")])
def test_poll_interval_errors_are_qemus(value: int, text: str) -> None:
    h = make_balloon()
    with pytest.raises(ConfigError, match=text):
        h.dev.set_poll_interval(value)
    assert h.dev.stats_poll_interval == 0 and h.timers == []


def test_poll_interval_zero_stops_and_a_change_rearms_after_the_new_interval() -> None:
    h, _drv = ready()
    h.dev.set_poll_interval(2)
    h.dev.set_poll_interval(5)
    h.dev.set_poll_interval(0)
    assert h.timers == [0.0, 5.0, None]


def test_timer_without_a_kept_buffer_reschedules() -> None:
    h, drv = ready()
    h.dev.set_poll_interval(3)
    h.dev.stats_timer_expired()
    assert h.timers[-1] == 3.0 and drv.used_idx(b.STATSQ) == 0


def test_device_reset_keeps_target_and_actual_and_drops_the_stats_buffer() -> None:
    h, drv = ready()
    h.dev.set_target(RAM_SIZE // 2)
    drv.write_actual(100)
    drv.send_stats([(4, 1)])
    h.t.write(STATUS, 4, 0)
    assert (h.dev.num_pages, h.dev.actual) == (RAM_SIZE // 2 // 4096, 100)
    assert not h.dev.stats_held and h.dev.driver_features == 0
    assert isinstance(h.events[-1], DeviceReset)
    h.dev.system_reset()
    assert h.dev.guest_size == RAM_SIZE - 100 * 4096  # stale until the new driver writes


def test_state_roundtrip_and_stats_buffer_popped_again() -> None:
    h, drv = ready()
    h.dev.set_target(RAM_SIZE // 2)
    drv.write_actual(77)
    drv.send_stats([(4, 11)])
    h.dev.set_poll_interval(2)
    dev_state = json.loads(json.dumps(h.dev.save()))
    t_state = json.loads(json.dumps(h.t.save()))
    assert len(t_state["queues"]) == 2

    h2 = make_balloon()
    h2.t.mem = h.mem
    held = h2.dev.load(dev_state)
    h2.t.load(t_state)
    assert held and h2.timers == [2.0]
    h2.t.rewind(b.STATSQ)
    assert (h2.dev.num_pages, h2.dev.actual) == (h.dev.num_pages, 77)
    h2.dev.stats_timer_expired()  # pops the rewound buffer, then hands it back
    assert drv.used_idx(b.STATSQ) == 1  # (the rings live in the migrated RAM)
    assert h2.dev.guest_stats()["stats"]["stat-free-memory"] == 11


@pytest.mark.parametrize("bad", [{}, {"format": "x"}, {"num_pages": -1}, {"stats": [1]},
                                 {"actual": 1 << 40}, {"stats_held": 1}])
def test_state_load_rejects_bad_state(bad: dict) -> None:
    h = make_balloon()
    state = h.dev.save()
    state = bad if not bad or "format" in bad else {**state, **bad}
    with pytest.raises(MigrationError):
        h.dev.load(state)
    assert h.dev.num_pages == 0
