"""The traditional memory balloon (virtio 1.2 §5.5), behaving like QEMU 7.2's virtio-balloon.

The host asks for a balloon of ``num_pages`` 4 KiB pages (QEMU: ``balloon N`` sets the guest's
size to N MiB); the driver inflates it by sending PFNs of pages it allocated on the inflateq,
deflates it on the deflateq, and writes ``actual``. On inflate the host discards each page
(``MADV_DONTNEED``: its host memory is freed); on deflate it only hints (``MADV_WILLNEED``,
which brings nothing back for anonymous memory). Nothing makes the guest keep its word: a page
it gave up stays mapped, and writing to it simply backs it with host memory again -- "virtio-
balloon was not designed to give guarantees" (the 2017 RFC). With DEFLATE_ON_OOM the driver
takes pages back when it runs out of memory; with free page reporting (``reporting_vq``) it
reports free memory the host may discard, without giving it up.

Pure Python, no emulator imports: the machine gives it a :class:`BalloonBackend` (guest RAM on
the host and QEMU's ``get_current_ram_size()``), ``emit`` for events, and binds
``notify_config``/``notify_used``/``current_queue``/``schedule_poll`` when it is attached.
Whatever the guest puts in the queues is untrusted: PFNs that name no RAM are skipped (QEMU's
``virtio_balloon_bad_addr``), a buffer is read only up to :data:`MAX_PFNS_PER_BUFFER`, and
only ring errors (raised by the virtqueue) break the device.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from device import virtio_balloon_protocol as b
from device.errors import ConfigError, MigrationError
from device.events import (
    BalloonActual,
    BalloonPages,
    BalloonReport,
    BalloonStats,
    ConfigChange,
    DeviceReset,
    Event,
)
from device.virtqueue import Chain, SplitVirtqueue

STATE_FORMAT = "vmemlab-virtio-balloon/1"
MiB = 1 << 20
U32_MAX = (1 << 32) - 1
#: PFNs read from one inflate/deflate buffer (Linux sends 256); the rest is ignored, so a
#: guest cannot make one notification cost the host unbounded time.
MAX_PFNS_PER_BUFFER = 4096
#: stats entries read from one buffer (Linux sends 10)
MAX_STATS_PER_BUFFER = 64


class BalloonBackend(Protocol):
    """Guest RAM as the host sees it (the emulator implements it)."""

    def ram_size(self) -> int:
        """QEMU 7.2's ``get_current_ram_size()``: RAM plus pc-dimm memory (not virtio-mem)."""

    def inflate(self, gpa: int, pages: int) -> int:
        """Discard ``pages`` 4 KiB pages from ``gpa`` (``ram_block_discard_range``); returns
        how many of them are guest RAM (the rest are skipped)."""

    def deflate(self, gpa: int, pages: int) -> int:
        """``MADV_WILLNEED`` for the range (QEMU's ``balloon_deflate_page``); returns how
        many of the pages are guest RAM."""

    def report(self, gpa: int, size: int) -> bool:
        """Discard a reported free range; False when it is not inside one RAM block."""


@dataclass
class BalloonOptions:
    """QEMU's ``virtio-balloon`` properties (and one of vmemlab's, prefixed ``x-``)."""

    deflate_on_oom: bool = False  # deflate-on-oom
    free_page_reporting: bool = False  # free-page-reporting
    page_poison: bool = True  # page-poison (QEMU's default: on)
    must_tell_host: bool = False  # x-must-tell-host: QEMU never offers this bit

    def features(self) -> int:
        """The 64-bit feature bits a device with these options offers."""
        bits = 1 << b.VIRTIO_F_VERSION_1 | 1 << b.VIRTIO_BALLOON_F_STATS_VQ
        for enabled, bit in ((self.must_tell_host, b.VIRTIO_BALLOON_F_MUST_TELL_HOST),
                             (self.deflate_on_oom, b.VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
                             (self.page_poison, b.VIRTIO_BALLOON_F_PAGE_POISON),
                             (self.free_page_reporting, b.VIRTIO_BALLOON_F_REPORTING)):
            if enabled:
                bits |= 1 << bit
        return bits


def _no_notify() -> None:
    """Default config notifier until a transport attaches itself."""


def _no_used(_queue: int) -> None:
    """Default used-buffer notifier until a transport attaches itself."""


def _no_queue(_queue: int) -> SplitVirtqueue | None:
    return None


def _no_timer(_seconds: float | None) -> None:
    """Default stats timer: none (a board without a timer never polls)."""


class VirtioBalloonDevice:
    """One virtio-balloon device: config space, the four queues, stats, resets, state."""

    device_id = b.VIRTIO_ID_BALLOON

    def __init__(self, dev_id: str, *, options: BalloonOptions | None = None,
                 backend: BalloonBackend, emit: Callable[[Event], None],
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._id = dev_id
        self.options = options if options is not None else BalloonOptions()
        self._backend = backend
        self._emit = emit
        self._wall = wall_clock
        self.notify_config: Callable[[], None] = _no_notify
        """Config-change interrupt; the transport binds it."""
        self.notify_used: Callable[[int], None] = _no_used
        """Used-buffer interrupt of a queue (the stats timer uses it); the transport binds it."""
        self.current_queue: Callable[[int], SplitVirtqueue | None] = _no_queue
        """The live virtqueue of an index, or None; the transport binds it."""
        self.schedule_poll: Callable[[float | None], None] = _no_timer
        """Arm the stats timer to fire in N seconds (None: stop it); the board binds it."""
        self.num_pages = 0
        self.actual = 0
        self.poison_val = 0
        self.driver_features = 0
        self.config_generation = 0
        self.broken = False
        self.broken_reason: str | None = None
        self.stats = [b.STAT_UNSET] * b.VIRTIO_BALLOON_S_NR
        self.stats_last_update = 0
        self.stats_poll_interval = 0
        self._held: Chain | None = None  # the stats buffer kept to ask for the next stats
        self._config = bytearray(self.config_size)  # QEMU's vdev->config
        self.inflated_pages = 0
        self.deflated_pages = 0
        self.ignored_pfns = 0
        self.reported_bytes = 0

    # ----------------------------------------------------------------------- properties
    @property
    def id(self) -> str:
        return self._id

    @property
    def device_features(self) -> int:
        return self.options.features()

    @property
    def config_size(self) -> int:
        """QEMU's ``virtio_balloon_config_size()``: poison_val exists with PAGE_POISON."""
        return b.CONFIG.size if self.options.page_poison else b.CONFIG_SIZE_NO_POISON

    @property
    def queue_sizes(self) -> tuple[int, ...]:
        """Maximum size of each queue, in QEMU's order (inflateq, deflateq, statsq, reporting)."""
        sizes: tuple[int, ...] = (b.QUEUE_SIZE, b.QUEUE_SIZE, b.QUEUE_SIZE)
        if self.options.free_page_reporting:
            sizes += (b.REPORTING_QUEUE_SIZE,)
        return sizes

    def negotiated(self, bit: int) -> bool:
        return bool(self.driver_features >> bit & 1)

    @property
    def ram_size(self) -> int:
        return self._backend.ram_size()

    @property
    def guest_size(self) -> int:
        """QEMU's ``query-balloon`` ``actual``: RAM size minus the pages in the balloon."""
        return self.ram_size - (self.actual << b.PFN_SHIFT)

    @property
    def target_size(self) -> int:
        """The guest size the host asked for (RAM size minus ``num_pages``)."""
        return self.ram_size - (self.num_pages << b.PFN_SHIFT)

    @property
    def stats_held(self) -> bool:
        return self._held is not None

    def guest_stats(self) -> dict[str, Any]:
        """QEMU's ``guest-stats`` property: stats by name, in QEMU's print order."""
        by_name = dict(zip(b.STAT_NAMES, self.stats, strict=True))
        return {"stats": {name: by_name[name] for name in b.STAT_PRINT_ORDER},
                "last-update": self.stats_last_update}

    # ----------------------------------------------------------------------- features
    def features_ok(self, driver_features: int) -> bool:
        """Whether the device accepts FEATURES_OK with these driver features.

        Refused (the spec's "MAY fail"): bits not offered, no VIRTIO_F_VERSION_1 (vmemlab
        has no legacy interface), and an offered MUST_TELL_HOST the driver did not accept
        (§5.5.3.2).
        """
        offered = self.device_features
        if driver_features & ~offered:
            return False
        if not driver_features >> b.VIRTIO_F_VERSION_1 & 1:
            return False
        tell = 1 << b.VIRTIO_BALLOON_F_MUST_TELL_HOST
        return not (offered & tell and not driver_features & tell)

    # ----------------------------------------------------------------------- config
    def _config_bytes(self) -> bytes:
        """QEMU's ``virtio_balloon_get_config`` (free_page_hint_cmd_id: never requested)."""
        return b.CONFIG.pack(self.num_pages, self.actual, 0, self.poison_val)[: self.config_size]

    def read_config(self, offset: int, size: int) -> int:
        """Little-endian value of config[offset:offset+size]; 0 if not fully inside."""
        if offset < 0 or size <= 0 or offset + size > self.config_size:
            return 0
        self._config[:] = self._config_bytes()  # every read refreshes QEMU's copy
        return int.from_bytes(self._config[offset : offset + size], "little")

    def write_config(self, offset: int, size: int, value: int) -> None:
        """QEMU's ``virtio_config_modern_write*`` then ``virtio_balloon_set_config``.

        The write patches the device's copy of the config space (last read), then ``actual``
        and, with PAGE_POISON negotiated, ``poison_val`` are taken from it; ``num_pages`` is
        the host's and cannot be written. A changed ``actual`` is a BALLOON_CHANGE.
        """
        if size not in (1, 2, 4) or offset < 0 or offset + size > self.config_size:
            return
        self._config[offset : offset + size] = (value & ((1 << 8 * size) - 1)).to_bytes(
            size, "little")
        _num, actual, _cmd, poison = b.CONFIG.unpack(bytes(self._config).ljust(b.CONFIG.size,
                                                                               b"\0"))
        old = self.actual
        self.actual = actual
        if actual != old:
            self.config_generation += 1
            self._emit(BalloonActual(self._id, actual, self.guest_size))
        self.poison_val = poison if self.negotiated(b.VIRTIO_BALLOON_F_PAGE_POISON) else 0

    def set_target(self, target: int) -> None:
        """QEMU's ``virtio_balloon_to_target``: the guest should have ``target`` bytes.

        Clamped to the RAM size; a target of 0 changes nothing (the monitor refuses it
        first); the config notification is sent even if num_pages did not change.
        """
        if not isinstance(target, int) or target < 0:
            raise ConfigError("Parameter 'target' expects a size")
        ram = self.ram_size
        target = min(target, ram)
        if not target:
            return
        pages = min((ram - target) >> b.PFN_SHIFT, U32_MAX)
        changed = pages != self.num_pages
        self.num_pages = pages
        if changed:
            self.config_generation += 1
        self.notify_config()
        self._emit(ConfigChange(self._id, {"num_pages": pages} if changed else {}, True))

    # ----------------------------------------------------------------------- queues
    def handle_queue(self, index: int, vq: SplitVirtqueue) -> int:
        """Handle every available buffer of queue ``index``; returns how many were used.

        Ring errors propagate as ``VirtqueueError`` (the transport breaks the device).
        """
        if index in (b.INFLATEQ, b.DEFLATEQ):
            return self._handle_pages(index, vq)
        if index == b.STATSQ:
            return self._receive_stats(vq)
        if index == b.REPORTINGQ and self.options.free_page_reporting:
            return self._handle_report(vq)
        return 0

    def _handle_pages(self, index: int, vq: SplitVirtqueue) -> int:
        used = 0
        while (chain := vq.pop()) is not None:
            data = chain.read(4 * MAX_PFNS_PER_BUFFER)
            count = len(data) // 4
            pfns = struct.unpack_from(f"<{count}I", data) if count else ()
            done = self._pages(index, pfns)
            ignored = chain.readable_len // 4 - done
            self.ignored_pfns += ignored
            self._emit(BalloonPages(self._id, b.QUEUE_NAMES[index], done, ignored))
            vq.push(chain, 0)  # the device writes nothing into these buffers
            used += 1
        return used

    def _pages(self, index: int, pfns: tuple[int, ...]) -> int:
        """Inflate or deflate ``pfns``, consecutive ones (rising or falling: a driver
        deflates its newest pages first) as one range; pages acted on."""
        act = self._backend.inflate if index == b.INFLATEQ else self._backend.deflate
        done = 0
        start = count = 0  # the run [start, start + count)
        step = 0  # +1 rising, -1 falling, 0 not known yet
        for pfn in pfns:
            if count and step >= 0 and pfn == start + count:
                count, step = count + 1, 1
                continue
            if count and step <= 0 and pfn == start - 1:
                start, count, step = pfn, count + 1, -1
                continue
            if count:
                done += act(start << b.PFN_SHIFT, count)
            start, count, step = pfn, 1, 0
        if count:
            done += act(start << b.PFN_SHIFT, count)
        if index == b.INFLATEQ:
            self.inflated_pages += done
        else:
            self.deflated_pages += done
        return done

    def _receive_stats(self, vq: SplitVirtqueue) -> int:
        """QEMU's ``virtio_balloon_receive_stats``: keep the buffer, record the stats."""
        chain = vq.pop()
        used = 0
        if chain is not None:
            if self._held is not None:  # the driver broke "at most one buffer": give it back
                vq.push(self._held, 0)
                used = 1
            self._held = chain
            self.stats = [b.STAT_UNSET] * b.VIRTIO_BALLOON_S_NR
            data = chain.read(b.STAT.size * MAX_STATS_PER_BUFFER)
            for off in range(0, len(data) - b.STAT.size + 1, b.STAT.size):
                tag, value = b.STAT.unpack_from(data, off)
                if tag < b.VIRTIO_BALLOON_S_NR:  # unknown tags are ignored (§5.5.6.3.1)
                    self.stats[tag] = value
            self.stats_last_update = int(self._wall())
            self._emit(BalloonStats(self._id, self.stats_last_update))
        if self.stats_poll_interval > 0:
            self.schedule_poll(float(self.stats_poll_interval))
        return used

    def _handle_report(self, vq: SplitVirtqueue) -> int:
        """QEMU's ``virtio_balloon_handle_report``: discard each reported range."""
        used = 0
        while (chain := vq.pop()) is not None:
            keep = bool(self.poison_val)  # the guest expects its poison value back
            total = 0
            if not keep:
                for addr, length in chain.writable:
                    if (addr | length) % b.PAGE_SIZE:
                        continue  # QEMU ignores ranges not aligned to the host page
                    if self._backend.report(addr, length):
                        total += length
                self.reported_bytes += total
            self._emit(BalloonReport(self._id, len(chain.writable), total, not keep))
            vq.push(chain, 0)
            used += 1
        return used

    # ----------------------------------------------------------------------- stats timer
    def set_poll_interval(self, seconds: int) -> None:
        """QEMU's ``guest-stats-polling-interval`` setter, its checks and texts."""
        if seconds < 0:
            raise ConfigError("timer value must be greater than zero")
        if seconds > U32_MAX:
            raise ConfigError("timer value is too big")
        if seconds == self.stats_poll_interval:
            return
        was, self.stats_poll_interval = self.stats_poll_interval, seconds
        if seconds == 0:
            self.schedule_poll(None)  # timer=0 disables the timer
        else:  # a new timer fires at once; a changed one after the new interval (QEMU)
            self.schedule_poll(float(seconds) if was else 0.0)

    def stats_timer_expired(self) -> None:
        """QEMU's ``balloon_stats_poll_cb``: hand the kept buffer back to ask for stats."""
        if self.stats_poll_interval <= 0:
            return
        vq = self.current_queue(b.STATSQ)
        if self._held is None and vq is not None and not self.broken:
            # a buffer the driver made available while none was kept (after a migration,
            # QEMU rewinds the queue and pops it again)
            self._receive_stats(vq)
        if (self._held is None or vq is None or self.broken
                or not self.negotiated(b.VIRTIO_BALLOON_F_STATS_VQ)):
            self.schedule_poll(float(self.stats_poll_interval))  # re-schedule
            return
        held, self._held = self._held, None
        vq.push(held, 0)
        self.notify_used(b.STATSQ)

    # ----------------------------------------------------------------------- resets
    def mark_broken(self, reason: str) -> None:
        self.broken = True
        self.broken_reason = reason

    def device_reset(self) -> None:
        """Virtio reset (also part of a system reset): num_pages and actual stay (QEMU)."""
        self.driver_features = 0
        self.broken = False
        self.broken_reason = None
        self._held = None
        self.poison_val = 0
        self._emit(DeviceReset(self._id, "device"))

    def system_reset(self) -> None:
        """Machine reset: QEMU 7.2 resets the virtio device only; the target survives, and
        so does ``actual`` until the next driver writes it."""
        self.device_reset()

    # ----------------------------------------------------------------------- migration
    def save(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "id": self._id, "num_pages": self.num_pages,
            "actual": self.actual, "poison_val": self.poison_val,
            "driver_features": self.driver_features, "stats": list(self.stats),
            "stats_last_update": self.stats_last_update,
            "stats_poll_interval": self.stats_poll_interval,
            "stats_held": self._held is not None,
            "broken": self.broken, "broken_reason": self.broken_reason,
        }

    def load(self, state: dict[str, Any]) -> bool:
        """Restore :meth:`save` output; returns whether a stats buffer was kept (the
        transport then rewinds the stats queue by one, as QEMU does). All-or-nothing."""
        try:
            if state.get("format") != STATE_FORMAT:
                raise ValueError("unknown state format")
            ints = {k: _u(state[k], 64) for k in ("num_pages", "actual", "poison_val",
                                                  "driver_features", "stats_last_update",
                                                  "stats_poll_interval")}
            stats = [_u(v, 64) for v in state["stats"]]
            held, broken, reason = state["stats_held"], state["broken"], state["broken_reason"]
            if len(stats) != b.VIRTIO_BALLOON_S_NR or not isinstance(held, bool) or \
                    not isinstance(broken, bool) or not (reason is None or isinstance(reason, str)):
                raise ValueError("stats/flags")
            if max(ints["num_pages"], ints["actual"], ints["poison_val"]) > U32_MAX or \
                    ints["stats_poll_interval"] > U32_MAX:
                raise ValueError("a 32-bit field is out of range")
        except (KeyError, TypeError, ValueError) as exc:
            raise MigrationError(f"virtio-balloon '{self._id}': invalid state: {exc!r}") \
                from exc
        self.num_pages, self.actual = ints["num_pages"], ints["actual"]
        self.poison_val, self.driver_features = ints["poison_val"], ints["driver_features"]
        self.stats, self.stats_last_update = stats, ints["stats_last_update"]
        self.stats_poll_interval = ints["stats_poll_interval"]
        self.broken, self.broken_reason = broken, reason
        self._held = None
        self.config_generation += 1
        if self.stats_poll_interval:
            self.schedule_poll(float(self.stats_poll_interval))
        return held


def _u(value: Any, bits: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise TypeError(f"{value!r} is not a u{bits}")
    return value
