"""Byte layouts and constants of the traditional memory balloon (virtio 1.2 §5.5).

Kept apart from the device model so tests, the guest's C header and the monitor can share the
numbers without the behaviour. Names follow Linux's ``include/uapi/linux/virtio_balloon.h``
and QEMU's ``hw/virtio/virtio-balloon.c``.
"""

from __future__ import annotations

import struct

VIRTIO_ID_BALLOON = 5
VIRTIO_F_VERSION_1 = 32

# feature bits (§5.5.3)
VIRTIO_BALLOON_F_MUST_TELL_HOST = 0
VIRTIO_BALLOON_F_STATS_VQ = 1
VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 2
VIRTIO_BALLOON_F_FREE_PAGE_HINT = 3
VIRTIO_BALLOON_F_PAGE_POISON = 4
VIRTIO_BALLOON_F_REPORTING = 5  # the spec's VIRTIO_BALLOON_F_PAGE_REPORTING

FEATURE_NAMES = {
    VIRTIO_BALLOON_F_MUST_TELL_HOST: "VIRTIO_BALLOON_F_MUST_TELL_HOST",
    VIRTIO_BALLOON_F_STATS_VQ: "VIRTIO_BALLOON_F_STATS_VQ",
    VIRTIO_BALLOON_F_DEFLATE_ON_OOM: "VIRTIO_BALLOON_F_DEFLATE_ON_OOM",
    VIRTIO_BALLOON_F_FREE_PAGE_HINT: "VIRTIO_BALLOON_F_FREE_PAGE_HINT",
    VIRTIO_BALLOON_F_PAGE_POISON: "VIRTIO_BALLOON_F_PAGE_POISON",
    VIRTIO_BALLOON_F_REPORTING: "VIRTIO_BALLOON_F_REPORTING",
}

# virtqueues, numbered as QEMU creates them and Linux finds them: consecutive, so the reporting
# queue is 3 when free page hinting is not offered (QEMU 7.2: num_vqs 4, queue_sel 3)
INFLATEQ, DEFLATEQ, STATSQ, REPORTINGQ = 0, 1, 2, 3
QUEUE_NAMES = {INFLATEQ: "inflate", DEFLATEQ: "deflate", STATSQ: "stats",
               REPORTINGQ: "report"}
QUEUE_SIZE = 128  # QEMU: virtio_add_queue(vdev, 128, ...) for ivq, dvq, svq
REPORTING_QUEUE_SIZE = 32  # QEMU: virtio_add_queue(vdev, 32, virtio_balloon_handle_report)

PFN_SHIFT = 12  # VIRTIO_BALLOON_PFN_SHIFT: balloon pages are 4 KiB, whatever the guest's
PAGE_SIZE = 1 << PFN_SHIFT
PFN = struct.Struct("<I")

# struct virtio_balloon_config: num_pages, actual, free_page_hint_cmd_id, poison_val
CONFIG = struct.Struct("<IIII")
NUM_PAGES, ACTUAL, FREE_PAGE_HINT_CMD_ID, POISON_VAL = 0, 4, 8, 12
CONFIG_SIZE_NO_POISON = 8  # QEMU's virtio_balloon_config_size() without PAGE_POISON/hinting

# struct virtio_balloon_stat { le16 tag; le64 val; } __attribute__((packed))
STAT = struct.Struct("<HQ")
VIRTIO_BALLOON_S_NR = 10
#: QEMU's ``balloon_stat_names``, indexed by tag
STAT_NAMES = ("stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-minor-faults",
              "stat-free-memory", "stat-total-memory", "stat-available-memory",
              "stat-disk-caches", "stat-htlb-pgalloc", "stat-htlb-pgfail")
#: the order QEMU 7.2 prints them in (its QDict's hash order; reference/11_balloon.txt)
STAT_PRINT_ORDER = ("stat-htlb-pgalloc", "stat-swap-out", "stat-available-memory",
                    "stat-htlb-pgfail", "stat-free-memory", "stat-minor-faults",
                    "stat-major-faults", "stat-total-memory", "stat-swap-in",
                    "stat-disk-caches")
STAT_UNSET = (1 << 64) - 1  # QEMU's reset_stats(): -1, printed as a uint64

assert len(STAT_NAMES) == VIRTIO_BALLOON_S_NR
assert sorted(STAT_PRINT_ORDER) == sorted(STAT_NAMES)
