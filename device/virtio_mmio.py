"""virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), for one virtio device.

The device is a virtio-mem device (one guest-request queue) or a :class:`QueueDevice` with
several queues of its own (virtio-balloon). The guest reaches the device only through
:meth:`VirtioMmioTransport.read`/``write``; both never raise, whatever the guest does.
Protocol or ring errors mark the device broken the way QEMU's ``virtio_error`` does
(DEVICE_NEEDS_RESET + config interrupt) and emit :class:`DeviceBroken`. Queue notifications
are processed synchronously in ``write``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from device import virtio_mem_protocol as p
from device import virtio_mem_types
from device.errors import MigrationError, VmemError
from device.events import DeviceBroken, Event
from device.virtio_mem import VirtioMemDevice
from device.virtqueue import (
    MAX_QUEUE_SIZE,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    GuestMemory,
    SplitVirtqueue,
)

MAGIC_VALUE = 0x74726976  # "virt"
VERSION = 2
VENDOR_ID = 0x554D4551  # "QEMU"

# register offsets
MAGIC, VERSION_REG, DEVICE_ID, VENDOR = 0x000, 0x004, 0x008, 0x00C
DEVICE_FEATURES, DEVICE_FEATURES_SEL = 0x010, 0x014
DRIVER_FEATURES, DRIVER_FEATURES_SEL = 0x020, 0x024
QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM, QUEUE_READY, QUEUE_NOTIFY = 0x030, 0x034, 0x038, 0x044, 0x050
INTERRUPT_STATUS, INTERRUPT_ACK, STATUS = 0x060, 0x064, 0x070
QUEUE_DESC_LOW, QUEUE_DESC_HIGH = 0x080, 0x084
QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH = 0x090, 0x094
QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH = 0x0A0, 0x0A4
SHM_SEL, SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH = 0x0AC, 0xB0, 0xB4, 0xB8, 0xBC
QUEUE_RESET = 0x0C0
CONFIG_GENERATION = 0x0FC
CONFIG = 0x100

# device status bits
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8
DEVICE_NEEDS_RESET, FAILED = 0x40, 0x80

INT_VRING, INT_CONFIG = 1, 2

_M32 = 0xFFFFFFFF


class QueueDevice(Protocol):
    """A device with queues of its own (virtio-balloon): what the transport asks of it.

    The transport binds ``notify_config`` (config-change interrupt), ``notify_used`` (a
    used-buffer interrupt the device raises later, e.g. from a timer) and ``current_queue``
    (the live ring of an index) when it is attached.
    """

    device_id: int
    driver_features: int
    config_generation: int
    broken: bool
    notify_config: Callable[[], None]
    notify_used: Callable[[int], None]
    current_queue: Callable[[int], SplitVirtqueue | None]

    @property
    def id(self) -> str: ...

    @property
    def device_features(self) -> int: ...

    @property
    def queue_sizes(self) -> tuple[int, ...]: ...

    def features_ok(self, driver_features: int) -> bool: ...

    def read_config(self, offset: int, size: int) -> int: ...

    def write_config(self, offset: int, size: int, value: int) -> None: ...

    def handle_queue(self, index: int, vq: SplitVirtqueue) -> int: ...

    def mark_broken(self, reason: str) -> None: ...

    def device_reset(self) -> None: ...


class _Queue:
    """The registers and ring of one virtqueue."""

    __slots__ = ("desc", "device", "driver", "max_size", "num", "ready", "vq")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.num = max_size
        self.desc = 0
        self.driver = 0
        self.device = 0
        self.ready = False
        self.vq: SplitVirtqueue | None = None


def _serve_virtio_mem(device: VirtioMemDevice, vq: SplitVirtqueue) -> int:
    """virtio-mem's guest-request queue: one request, one response per chain."""
    done = 0
    while (chain := vq.pop()) is not None:
        request = chain.read(p.REQUEST_SIZE)
        response = device.handle_request(request, chain.writable_len)
        written = chain.write(response)
        vq.push(chain, written)
        done += 1
    return done


class VirtioMmioTransport:
    """Register file and virtqueues of one virtio device.

    Attaching binds the device's ``notify_config`` to :meth:`config_changed` (and, for a
    :class:`QueueDevice`, ``notify_used`` and ``current_queue``), so the device can be built
    first and the transport afterwards.
    """

    def __init__(
        self,
        device: VirtioMemDevice | QueueDevice,
        mem: GuestMemory,
        raise_irq: Callable[[], None],
        emit: Callable[[Event], None],
    ) -> None:
        self.device = device
        self.mem = mem
        self._raise_irq = raise_irq
        self._emit = emit
        device.notify_config = self.config_changed
        if isinstance(device, VirtioMemDevice):
            self._device_id = p.VIRTIO_ID_MEM
            self._sizes: tuple[int, ...] = (MAX_QUEUE_SIZE,)
            if device.requests is not None:  # vmemlab's experimental x-host-request queue
                self._sizes = (MAX_QUEUE_SIZE, MAX_QUEUE_SIZE)
                device.requests.current_queue = self.queue
                device.requests.notify_used = self.used_buffer
                device.requests.process = self.process_queue
        else:
            self._device_id = device.device_id
            self._sizes = tuple(device.queue_sizes)
            device.notify_used = self.used_buffer
            device.current_queue = self.queue
        self.interrupt_status = 0
        self.reset_state()

    # ----------------------------------------------------------------------- state
    def reset_state(self) -> None:
        """Transport back to power-on state (virtio reset or system reset)."""
        self.status = 0
        self.interrupt_status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0  # as written by the driver, before FEATURES_OK
        self.queue_sel = 0
        self.queues = [_Queue(size) for size in self._sizes]
        requests = getattr(self.device, "requests", None)
        if requests is not None:  # a held x-host-request buffer went with the rings
            requests.reset("reset")

    @property
    def vq(self) -> SplitVirtqueue | None:
        """Queue 0's ring (virtio-mem's only queue), None while it is not ready."""
        return self.queues[0].vq

    def queue(self, index: int) -> SplitVirtqueue | None:
        """The ring of queue ``index`` while it is ready, else None."""
        if 0 <= index < len(self.queues) and self.queues[index].ready:
            return self.queues[index].vq
        return None

    @property
    def config_generation(self) -> int:
        return self.device.config_generation & _M32

    def config_changed(self) -> None:
        """Config-change notification: new generation, InterruptStatus bit 1, IRQ.

        Like QEMU ``virtio_notify_config``, the interrupt is only sent once the driver set
        DRIVER_OK; the generation always changes.
        """
        self.device.config_generation += 1
        if self.status & DRIVER_OK:
            self.interrupt_status |= INT_CONFIG
            self._raise_irq()

    def used_buffer(self, index: int) -> None:
        """A used-buffer notification for queue ``index`` (unless the driver suppressed it)."""
        vq = self.queue(index)
        if vq is None:
            return
        try:
            suppressed = vq.avail_flags() & VIRTQ_AVAIL_F_NO_INTERRUPT
        except VmemError:
            suppressed = 0
        if not suppressed:
            self.interrupt_status |= INT_VRING
            self._raise_irq()

    def _set_broken(self, reason: str) -> None:
        """QEMU ``virtio_error``: device broken, NEEDS_RESET, config interrupt."""
        if self.device.broken:
            return
        self.device.mark_broken(reason)
        self.status |= DEVICE_NEEDS_RESET
        self._emit(DeviceBroken(self.device.id, reason))
        self.config_changed()

    # ----------------------------------------------------------------------- MMIO
    def read(self, offset: int, size: int) -> int:
        """MMIO load; unknown offsets and odd sizes read as 0. Never raises."""
        if offset >= CONFIG:
            if isinstance(self.device, VirtioMemDevice):  # + the experimental type field
                return virtio_mem_types.read_config(self.device, offset - CONFIG, size)
            return self.device.read_config(offset - CONFIG, size)
        if size not in (1, 2, 4) or offset < 0 or offset % size:
            return 0
        value = self._read_reg(offset & ~3)
        shift = (offset & 3) * 8
        return (value >> shift) & ((1 << (8 * size)) - 1)

    def _selected(self) -> _Queue | None:
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    def _read_reg(self, reg: int) -> int:
        q = self._selected()
        if reg == MAGIC:
            return MAGIC_VALUE
        if reg == VERSION_REG:
            return VERSION
        if reg == DEVICE_ID:
            return self._device_id
        if reg == VENDOR:
            return VENDOR_ID
        if reg == DEVICE_FEATURES:
            if self.device_features_sel > 1:
                return 0
            return (self.device.device_features >> (32 * self.device_features_sel)) & _M32
        if reg == QUEUE_NUM_MAX:
            return q.max_size if q is not None else 0
        if reg == QUEUE_READY:
            return int(q.ready) if q is not None else 0
        if reg == INTERRUPT_STATUS:
            return self.interrupt_status
        if reg == STATUS:
            return self.status
        if reg == CONFIG_GENERATION:
            return self.config_generation
        if reg in (SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH):
            return _M32  # no shared memory regions: all ones (spec)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        """MMIO store; malformed accesses are ignored. Never raises.

        Config space is written only for devices that have writable fields (the balloon's
        ``actual``, with QEMU's 1/2/4-byte accesses); virtio-mem's config is read-only.
        """
        if offset >= CONFIG:
            if not isinstance(self.device, VirtioMemDevice):
                self.device.write_config(offset - CONFIG, size, value)
            return
        if size != 4 or offset % 4:
            return  # registers are 32-bit only
        value &= _M32
        handler = self._WRITERS.get(offset)
        if handler is not None:
            handler(self, value)

    def _w_device_features_sel(self, value: int) -> None:
        self.device_features_sel = value

    def _w_driver_features_sel(self, value: int) -> None:
        self.driver_features_sel = value

    def _w_driver_features(self, value: int) -> None:
        if self.status & FEATURES_OK or self.driver_features_sel > 1:
            return
        shift = 32 * self.driver_features_sel
        self.driver_features = (self.driver_features & ~(_M32 << shift)) | (value << shift)

    def _w_queue_sel(self, value: int) -> None:
        self.queue_sel = value

    def _writable_queue(self) -> _Queue | None:
        q = self._selected()
        return q if q is not None and not q.ready else None

    def _w_queue_num(self, value: int) -> None:
        q = self._writable_queue()
        if q is not None:
            q.num = value

    def _set_addr(self, name: str, value: int, high: bool) -> None:
        q = self._writable_queue()
        if q is None:
            return
        old = getattr(q, name)
        new = (old & _M32) | (value << 32) if high else (old & ~_M32) | value
        setattr(q, name, new)

    def _w_queue_ready(self, value: int) -> None:
        q = self._selected()
        if q is None:
            return
        if not value & 1:
            q.ready = False
            q.vq = None
            return
        if q.ready:
            return
        try:
            q.vq = SplitVirtqueue(self.mem, q.num, q.desc, q.driver, q.device,
                                  max_size=q.max_size)
        except VmemError as exc:
            self._set_broken(str(exc))
            return
        q.ready = True

    def _w_queue_notify(self, value: int) -> None:
        index = value & 0xFFFF
        if index < len(self.queues):
            self.process_queue(index)

    def _w_interrupt_ack(self, value: int) -> None:
        self.interrupt_status &= ~value

    def _w_status(self, value: int) -> None:
        value &= 0xFF
        if value == 0:
            self.reset_state()
            self.device.device_reset()
            return
        if value & FEATURES_OK and not self.status & FEATURES_OK:
            if self.device.features_ok(self.driver_features):
                self.device.driver_features = self.driver_features
            else:
                value &= ~FEATURES_OK
        # NEEDS_RESET belongs to the device: the driver can neither set nor clear it
        self.status = (value & ~DEVICE_NEEDS_RESET) | (self.status & DEVICE_NEEDS_RESET)

    _WRITERS: ClassVar[dict[int, Callable[[VirtioMmioTransport, int], None]]] = {
        DEVICE_FEATURES_SEL: _w_device_features_sel,
        DRIVER_FEATURES: _w_driver_features,
        DRIVER_FEATURES_SEL: _w_driver_features_sel,
        QUEUE_SEL: _w_queue_sel,
        QUEUE_NUM: _w_queue_num,
        QUEUE_DESC_LOW: lambda t, v: t._set_addr("desc", v, False),
        QUEUE_DESC_HIGH: lambda t, v: t._set_addr("desc", v, True),
        QUEUE_DRIVER_LOW: lambda t, v: t._set_addr("driver", v, False),
        QUEUE_DRIVER_HIGH: lambda t, v: t._set_addr("driver", v, True),
        QUEUE_DEVICE_LOW: lambda t, v: t._set_addr("device", v, False),
        QUEUE_DEVICE_HIGH: lambda t, v: t._set_addr("device", v, True),
        QUEUE_READY: _w_queue_ready,
        QUEUE_NOTIFY: _w_queue_notify,
        INTERRUPT_ACK: _w_interrupt_ack,
        STATUS: _w_status,
    }

    # ----------------------------------------------------------------------- queues
    def process_queue(self, index: int = 0) -> int:
        """Handle every available buffer of queue ``index`` now; returns how many were used.

        One used-buffer interrupt per batch (unless the driver set NO_INTERRUPT). Any ring
        or protocol error breaks the device and stops processing; it never propagates.
        """
        vq = self.queue(index)
        if vq is None or self.device.broken:
            return 0
        done = 0
        try:
            if isinstance(self.device, VirtioMemDevice) and index == 0:
                done = _serve_virtio_mem(self.device, vq)
            elif isinstance(self.device, VirtioMemDevice):
                assert self.device.requests is not None  # only then is there a queue 1
                done = self.device.requests.serve(vq)
            else:
                done = self.device.handle_queue(index, vq)
        except VmemError as exc:
            self._set_broken(str(exc))
        if done:
            self.used_buffer(index)
        return done

    def rewind(self, index: int) -> None:
        """QEMU's ``virtqueue_rewind(vq, 1)``: make the last buffer the device took (and kept,
        unused) available again, so it is popped anew (the balloon's stats buffer after a
        migration)."""
        vq = self.queue(index)
        if vq is not None and vq.last_avail_idx != vq.used_idx:
            vq.last_avail_idx = (vq.last_avail_idx - 1) & 0xFFFF

    # ----------------------------------------------------------------------- migration
    def save(self) -> dict[str, Any]:
        """Transport and queue state (JSON-serialisable) for snapshots/migration.

        Queue 0 is kept in the top-level keys (virtio-mem's format); further queues, if the
        device has any, in ``queues``.
        """
        q0 = self.queues[0]
        state: dict[str, Any] = {
            "status": self.status,
            "interrupt_status": self.interrupt_status,
            "device_features_sel": self.device_features_sel,
            "driver_features_sel": self.driver_features_sel,
            "driver_features": self.driver_features,
            "queue_sel": self.queue_sel,
            "queue_num": q0.num,
            "queue_desc": q0.desc,
            "queue_driver": q0.driver,
            "queue_device": q0.device,
            "queue_ready": q0.ready,
            "last_avail_idx": q0.vq.last_avail_idx if q0.vq else 0,
            "used_idx": q0.vq.used_idx if q0.vq else 0,
        }
        if len(self.queues) > 1:
            state["queues"] = [_queue_state(q) for q in self.queues[1:]]
        requests = getattr(self.device, "requests", None)
        if requests is not None:
            state["x_guest_requests"] = requests.save()
        return state

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`save` output (after the device's own ``load``)."""
        try:
            values = {k: int(state[k]) for k in _SAVED_INTS}
            first = {"num": values["queue_num"], "desc": values["queue_desc"],
                     "driver": values["queue_driver"], "device": values["queue_device"],
                     "ready": bool(state["queue_ready"]),
                     "last_avail_idx": values["last_avail_idx"],
                     "used_idx": values["used_idx"]}
            extra = state.get("queues", []) if len(self.queues) > 1 else []
            if not isinstance(extra, list) or len(extra) != len(self.queues) - 1:
                raise ValueError(f"expected {len(self.queues) - 1} further queues")
            queues = [self._load_queue(q, s) for q, s in zip(self.queues, [first, *extra],
                                                              strict=True)]
        except (KeyError, TypeError, ValueError, VmemError) as exc:
            raise MigrationError(f"virtio-mmio: invalid transport state: {exc!r}") from exc
        for key in _SAVED_INTS[:6]:
            setattr(self, key, values[key])
        self.queues = queues
        requests = getattr(self.device, "requests", None)
        if requests is not None and "x_guest_requests" in state:
            try:
                held = requests.load(state["x_guest_requests"])
            except (KeyError, TypeError, ValueError) as exc:
                raise MigrationError(f"virtio-mmio: invalid request queue state: {exc!r}"
                                     ) from exc
            if held:  # popped, and asked about, again
                self.rewind(1)

    def _load_queue(self, template: _Queue, s: dict[str, Any]) -> _Queue:
        q = _Queue(template.max_size)
        q.num, q.desc = int(s["num"]), int(s["desc"])
        q.driver, q.device = int(s["driver"]), int(s["device"])
        q.ready = bool(s["ready"])
        if q.ready:
            q.vq = SplitVirtqueue(self.mem, q.num, q.desc, q.driver, q.device,
                                  max_size=q.max_size)
            q.vq.last_avail_idx = int(s["last_avail_idx"]) & 0xFFFF
            q.vq.used_idx = int(s["used_idx"]) & 0xFFFF
        return q


def _queue_state(q: _Queue) -> dict[str, Any]:
    return {"num": q.num, "desc": q.desc, "driver": q.driver, "device": q.device,
            "ready": q.ready, "last_avail_idx": q.vq.last_avail_idx if q.vq else 0,
            "used_idx": q.vq.used_idx if q.vq else 0}


_SAVED_INTS = (
    "status",
    "interrupt_status",
    "device_features_sel",
    "driver_features_sel",
    "driver_features",
    "queue_sel",
    "queue_num",
    "queue_desc",
    "queue_driver",
    "queue_device",
    "last_avail_idx",
    "used_idx",
)
