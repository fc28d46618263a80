"""One test per device-normative statement of virtio 1.2 §5.5 (Traditional Memory Balloon).

Statement (section) -> test
Feature bits (5.5.3.2):
  MAY fail FEATURES_OK when an offered MUST_TELL_HOST was not accepted
      -> test_device_may_refuse_features_without_offered_must_tell_host
  Legacy (5.5.3.2.1): transitional devices MUST support guests that do not negotiate
  MUST_TELL_HOST and SHOULD allow use before notifying -> not applicable: vmemlab offers no
  legacy interface -> test_legacy_must_tell_host_statements_do_not_apply_no_legacy_interface
Device operation (5.5.6.1):
  MAY modify a page after seeing it in an inflate request, before acknowledging it
      -> test_device_may_modify_inflated_page_before_acknowledging_inflate
  with MUST_TELL_HOST: MAY modify it until it acknowledges the deflate request
      -> test_device_with_must_tell_host_may_modify_until_deflate_is_acknowledged
  Legacy (5.5.6.1.1): SHOULD NOT use ``actual`` until its most-significant byte is written
      -> not applicable -> test_legacy_actual_statement_does_not_apply_no_legacy_interface
  (operation) acknowledges inflate and deflate requests by using the descriptor
      -> test_device_acknowledges_inflate_and_deflate_by_using_the_descriptor
Memory statistics (5.5.6.3.1):
  MUST ignore entries with tags it does not recognise
      -> test_device_must_ignore_unrecognised_stat_tags
  MUST accept entries in any order -> test_device_must_accept_stat_entries_in_any_order
  (operation) the device keeps the buffer to ask for the next stats, and uses it to ask
      -> test_device_keeps_stats_buffer_and_uses_it_to_request_stats
  Legacy (5.5.6.3.2): SHOULD ignore the first buffer -> not applicable
      -> test_legacy_first_stats_buffer_statement_does_not_apply_no_legacy_interface
Free page hinting (5.5.6.4.2): six device statements, all "if FREE_PAGE_HINT has been
  negotiated"; it is never offered (QEMU: free-page-hint=off without an iothread)
      -> test_free_page_hint_statements_do_not_apply_feature_never_offered
Page poison (5.5.6.5.2): MAY use poison_val as a hint
      -> test_device_may_use_poison_val_as_a_hint
Free page reporting (5.5.6.6.2):
  without PAGE_POISON: MAY modify reported pages before acknowledging
      -> test_device_may_discard_reported_pages_without_page_poison
  with PAGE_POISON: MUST NOT modify a reported page to a value other than poison_val
      -> test_device_must_not_modify_reported_pages_to_other_than_poison_val
"""

from __future__ import annotations

from balloon_fakes import PAGES, make_balloon, page_pfn, ready

from device import virtio_balloon_protocol as b
from device.events import BalloonPages
from device.virtio_balloon import BalloonOptions
from device.virtio_mmio import CONFIG, FEATURES_OK, STATUS

V1 = 1 << b.VIRTIO_F_VERSION_1
TELL = 1 << b.VIRTIO_BALLOON_F_MUST_TELL_HOST
POISON = 1 << b.VIRTIO_BALLOON_F_PAGE_POISON
REPORTING = 1 << b.VIRTIO_BALLOON_F_REPORTING
STATS = 1 << b.VIRTIO_BALLOON_F_STATS_VQ


# ---------------------------------------------------------------------------- feature bits


def test_device_may_refuse_features_without_offered_must_tell_host() -> None:
    h = make_balloon(BalloonOptions(must_tell_host=True))
    assert h.dev.device_features & TELL
    assert not h.dev.features_ok(V1 | STATS)
    assert h.dev.features_ok(V1 | STATS | TELL)
    # QEMU's default does not offer it, so a driver without it is fine there
    assert make_balloon().dev.features_ok(V1 | STATS)


def test_legacy_must_tell_host_statements_do_not_apply_no_legacy_interface() -> None:
    """Transitional-device statements need the legacy interface: without VERSION_1 the
    driver cannot even get FEATURES_OK, so no guest ever runs the legacy protocol."""
    from balloon_fakes import BalloonDriver

    h = make_balloon()
    assert not h.dev.features_ok(STATS)
    drv = BalloonDriver(h)
    assert not drv.init(features=STATS)
    assert not h.t.read(STATUS, 4) & FEATURES_OK


# ---------------------------------------------------------------------------- operation


def test_device_may_modify_inflated_page_before_acknowledging_inflate() -> None:
    h, drv = ready()
    drv.send_pfns(b.INFLATEQ, [page_pfn(0)], kick=False)
    assert h.ram.calls == [] and drv.used_idx(b.INFLATEQ) == 0
    drv.w(0x050, b.INFLATEQ)  # QueueNotify
    # the page is discarded (its contents may change: they read as zeros on the host) and
    # only then is the buffer used
    assert h.ram.calls == [("inflate", PAGES, 1)]
    assert drv.used_idx(b.INFLATEQ) == 1


def test_device_with_must_tell_host_may_modify_until_deflate_is_acknowledged() -> None:
    h, drv = ready(BalloonOptions(must_tell_host=True))
    assert h.dev.negotiated(b.VIRTIO_BALLOON_F_MUST_TELL_HOST)
    drv.send_pfns(b.INFLATEQ, [page_pfn(0), page_pfn(1)])
    drv.send_pfns(b.DEFLATEQ, [page_pfn(0), page_pfn(1)])
    # nothing is done to the contents on deflate: QEMU only hints MADV_WILLNEED
    assert [c[0] for c in h.ram.calls] == ["inflate", "deflate"]
    assert drv.used_idx(b.DEFLATEQ) == 1 and h.dev.deflated_pages == 2


def test_legacy_actual_statement_does_not_apply_no_legacy_interface() -> None:
    """Modern virtio-mmio: each config write takes effect, as in QEMU (no legacy path)."""
    h, drv = ready()
    drv.write_actual(0x0102, size=1)
    assert [e.actual for e in h.events if e.kind == "balloon_actual"] == [0x02, 0x0102]
    assert not h.dev.features_ok(STATS)  # the legacy interface cannot be negotiated


def test_device_acknowledges_inflate_and_deflate_by_using_the_descriptor() -> None:
    h, drv = ready()
    drv.send_pfns(b.INFLATEQ, [page_pfn(i) for i in range(4)])
    drv.send_pfns(b.DEFLATEQ, [page_pfn(3)])
    assert drv.used_idx(b.INFLATEQ) == 1 and drv.used_idx(b.DEFLATEQ) == 1
    assert drv.used_elem(b.INFLATEQ, 0) == (0, 0)  # used length 0: nothing written
    pages = [e for e in h.events if isinstance(e, BalloonPages)]
    assert [(e.queue, e.pages, e.ignored) for e in pages] == [("inflate", 4, 0),
                                                               ("deflate", 1, 0)]
    assert h.irqs  # a used buffer notification


# ---------------------------------------------------------------------------- statistics


def test_device_must_ignore_unrecognised_stat_tags() -> None:
    h, drv = ready()
    drv.send_stats([(b.VIRTIO_BALLOON_S_NR, 7), (4, 1234), (0xFFFF, 9), (5, 5678)])
    stats = h.dev.guest_stats()["stats"]
    assert stats["stat-free-memory"] == 1234 and stats["stat-total-memory"] == 5678
    assert 7 not in stats.values() and 9 not in stats.values()
    assert stats["stat-swap-in"] == b.STAT_UNSET  # not supplied: QEMU's -1


def test_device_must_accept_stat_entries_in_any_order() -> None:
    values = {tag: 1000 + tag for tag in range(b.VIRTIO_BALLOON_S_NR)}
    h1, d1 = ready()
    d1.send_stats(sorted(values.items()))
    h2, d2 = ready()
    d2.send_stats(sorted(values.items(), reverse=True))
    assert h1.dev.guest_stats() == h2.dev.guest_stats()
    assert h1.dev.guest_stats()["stats"]["stat-htlb-pgfail"] == 1009


def test_device_keeps_stats_buffer_and_uses_it_to_request_stats() -> None:
    h, drv = ready()
    drv.send_stats([(4, 1)])
    assert h.dev.stats_held and drv.used_idx(b.STATSQ) == 0  # kept, not used
    assert h.dev.guest_stats()["last-update"] == 1_796_287_551
    h.dev.set_poll_interval(2)
    assert h.timers[-1] == 0.0  # a new timer fires at once (QEMU)
    irqs = len(h.irqs)
    h.dev.stats_timer_expired()
    assert drv.used_idx(b.STATSQ) == 1 and len(h.irqs) == irqs + 1 and not h.dev.stats_held
    drv.send_stats([(4, 2)])
    assert h.timers[-1] == 2.0 and h.dev.guest_stats()["stats"]["stat-free-memory"] == 2


def test_legacy_first_stats_buffer_statement_does_not_apply_no_legacy_interface() -> None:
    """A modern driver fills its first buffer (Linux: update_balloon_stats at probe), and
    the device uses it: no legacy interface, so no uninitialised first buffer to skip."""
    h, drv = ready()
    drv.send_stats([(5, 1 << 30)])
    assert h.dev.guest_stats()["stats"]["stat-total-memory"] == 1 << 30


# ---------------------------------------------------------------------------- hinting, poison


def test_free_page_hint_statements_do_not_apply_feature_never_offered() -> None:
    hint = 1 << b.VIRTIO_BALLOON_F_FREE_PAGE_HINT
    for options in (BalloonOptions(), BalloonOptions(deflate_on_oom=True,
                                                     free_page_reporting=True)):
        h = make_balloon(options)
        assert not h.dev.device_features & hint
        assert not h.dev.features_ok(h.dev.device_features | hint)
        assert h.t.read(CONFIG + b.FREE_PAGE_HINT_CMD_ID, 4) == 0
        assert len(h.dev.queue_sizes) in (3, 4)  # no free_page_vq


def test_device_may_use_poison_val_as_a_hint() -> None:
    h, _drv = ready(BalloonOptions(free_page_reporting=True))
    assert not h.dev.negotiated(b.VIRTIO_BALLOON_F_PAGE_POISON)
    h.t.write(CONFIG + b.POISON_VAL, 4, 0xAA)
    assert h.dev.poison_val == 0  # not negotiated: ignored (QEMU)
    h2, drv2 = ready(BalloonOptions(free_page_reporting=True))
    assert drv2.init(features=h2.dev.device_features)
    h2.t.write(CONFIG + b.POISON_VAL, 4, 0xAAAAAAAA)
    assert h2.dev.poison_val == 0xAAAAAAAA


# ---------------------------------------------------------------------------- reporting


def test_device_may_discard_reported_pages_without_page_poison() -> None:
    h, drv = ready(BalloonOptions(free_page_reporting=True))
    drv.report([(PAGES, 2 << 20), (PAGES + (4 << 20), 2 << 20)])
    assert h.ram.calls == [("report", PAGES, 2 << 20), ("report", PAGES + (4 << 20), 2 << 20)]
    assert drv.used_idx(b.REPORTINGQ) == 1 and h.dev.reported_bytes == 4 << 20


def test_device_must_not_modify_reported_pages_to_other_than_poison_val() -> None:
    h, drv = ready(BalloonOptions(free_page_reporting=True))
    assert drv.init(features=h.dev.device_features)  # with PAGE_POISON
    h.t.write(CONFIG + b.POISON_VAL, 4, 0xAAAAAAAA)
    drv.report([(PAGES, 2 << 20)])
    # a discarded page would read as zeros, not 0xaa: the device keeps it
    assert h.ram.calls == [] and drv.used_idx(b.REPORTINGQ) == 1
    assert [e.discarded for e in h.events if e.kind == "balloon_report"] == [False]
    # poison value 0: zeros are the poison value, discarding is allowed
    h.t.write(CONFIG + b.POISON_VAL, 4, 0)
    drv.report([(PAGES, 2 << 20)])
    assert h.ram.calls == [("report", PAGES, 2 << 20)]
