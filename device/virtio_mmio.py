"""virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), for one virtio-mem device.

The guest reaches the device only through :meth:`VirtioMmioTransport.read`/``write``; both
never raise, whatever the guest does. Protocol or ring errors mark the device broken the way
QEMU's ``virtio_error`` does (DEVICE_NEEDS_RESET + config interrupt) and emit
:class:`DeviceBroken`. Queue notifications are processed synchronously in ``write``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from device import virtio_mem_protocol as p
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


class VirtioMmioTransport:
    """Register file + the single guest-request queue of a virtio-mem device.

    Attaching binds ``device.notify_config`` to :meth:`config_changed`, so the device can be
    built first and the transport afterwards.
    """

    def __init__(
        self,
        device: VirtioMemDevice,
        mem: GuestMemory,
        raise_irq: Callable[[], None],
        emit: Callable[[Event], None],
    ) -> None:
        self.device = device
        self.mem = mem
        self._raise_irq = raise_irq
        self._emit = emit
        device.notify_config = self.config_changed
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
        self.queue_num = MAX_QUEUE_SIZE
        self.queue_desc = 0
        self.queue_driver = 0
        self.queue_device = 0
        self.queue_ready = False
        self.vq: SplitVirtqueue | None = None

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
            return self.device.read_config(offset - CONFIG, size)
        if size not in (1, 2, 4) or offset < 0 or offset % size:
            return 0
        value = self._read_reg(offset & ~3)
        shift = (offset & 3) * 8
        return (value >> shift) & ((1 << (8 * size)) - 1)

    def _read_reg(self, reg: int) -> int:
        q0 = self.queue_sel == 0
        if reg == MAGIC:
            return MAGIC_VALUE
        if reg == VERSION_REG:
            return VERSION
        if reg == DEVICE_ID:
            return p.VIRTIO_ID_MEM
        if reg == VENDOR:
            return VENDOR_ID
        if reg == DEVICE_FEATURES:
            if self.device_features_sel > 1:
                return 0
            return (self.device.device_features >> (32 * self.device_features_sel)) & _M32
        if reg == QUEUE_NUM_MAX:
            return MAX_QUEUE_SIZE if q0 else 0
        if reg == QUEUE_READY:
            return int(self.queue_ready) if q0 else 0
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
        """MMIO store; config space and malformed accesses are ignored. Never raises."""
        if offset >= CONFIG or size != 4 or offset % 4:
            return  # driver MUST NOT write config; registers are 32-bit only
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

    def _queue_writable(self) -> bool:
        return self.queue_sel == 0 and not self.queue_ready

    def _w_queue_num(self, value: int) -> None:
        if self._queue_writable():
            self.queue_num = value

    def _set_addr(self, name: str, value: int, high: bool) -> None:
        if not self._queue_writable():
            return
        old = getattr(self, name)
        new = (old & _M32) | (value << 32) if high else (old & ~_M32) | value
        setattr(self, name, new)

    def _w_queue_ready(self, value: int) -> None:
        if self.queue_sel != 0:
            return
        if not value & 1:
            self.queue_ready = False
            self.vq = None
            return
        if self.queue_ready:
            return
        try:
            self.vq = SplitVirtqueue(
                self.mem, self.queue_num, self.queue_desc, self.queue_driver, self.queue_device
            )
        except VmemError as exc:
            self._set_broken(str(exc))
            return
        self.queue_ready = True

    def _w_queue_notify(self, value: int) -> None:
        if value & 0xFFFF == 0:
            self.process_queue()

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
        QUEUE_DESC_LOW: lambda t, v: t._set_addr("queue_desc", v, False),
        QUEUE_DESC_HIGH: lambda t, v: t._set_addr("queue_desc", v, True),
        QUEUE_DRIVER_LOW: lambda t, v: t._set_addr("queue_driver", v, False),
        QUEUE_DRIVER_HIGH: lambda t, v: t._set_addr("queue_driver", v, True),
        QUEUE_DEVICE_LOW: lambda t, v: t._set_addr("queue_device", v, False),
        QUEUE_DEVICE_HIGH: lambda t, v: t._set_addr("queue_device", v, True),
        QUEUE_READY: _w_queue_ready,
        QUEUE_NOTIFY: _w_queue_notify,
        INTERRUPT_ACK: _w_interrupt_ack,
        STATUS: _w_status,
    }

    # ----------------------------------------------------------------------- queue
    def process_queue(self) -> int:
        """Handle every available request now; returns how many were answered.

        One used-buffer interrupt per batch (unless the driver set NO_INTERRUPT). Any ring
        or protocol error breaks the device and stops processing; it never propagates.
        """
        vq = self.vq
        if vq is None or not self.queue_ready or self.device.broken:
            return 0
        done = 0
        try:
            while (chain := vq.pop()) is not None:
                request = chain.read(p.REQUEST_SIZE)
                response = self.device.handle_request(request, chain.writable_len)
                written = chain.write(response)
                vq.push(chain, written)
                done += 1
        except VmemError as exc:
            self._set_broken(str(exc))
        if done:
            try:
                suppressed = vq.avail_flags() & VIRTQ_AVAIL_F_NO_INTERRUPT
            except VmemError:
                suppressed = 0
            if not suppressed:
                self.interrupt_status |= INT_VRING
                self._raise_irq()
        return done

    # ----------------------------------------------------------------------- migration
    def save(self) -> dict[str, Any]:
        """Transport and queue state (JSON-serialisable) for snapshots/migration."""
        return {
            "status": self.status,
            "interrupt_status": self.interrupt_status,
            "device_features_sel": self.device_features_sel,
            "driver_features_sel": self.driver_features_sel,
            "driver_features": self.driver_features,
            "queue_sel": self.queue_sel,
            "queue_num": self.queue_num,
            "queue_desc": self.queue_desc,
            "queue_driver": self.queue_driver,
            "queue_device": self.queue_device,
            "queue_ready": self.queue_ready,
            "last_avail_idx": self.vq.last_avail_idx if self.vq else 0,
            "used_idx": self.vq.used_idx if self.vq else 0,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`save` output (after the device's own ``load``)."""
        try:
            values = {k: int(state[k]) for k in _SAVED_INTS}
            ready = bool(state["queue_ready"])
            vq = None
            if ready:
                vq = SplitVirtqueue(
                    self.mem,
                    values["queue_num"],
                    values["queue_desc"],
                    values["queue_driver"],
                    values["queue_device"],
                )
                vq.last_avail_idx = values["last_avail_idx"] & 0xFFFF
                vq.used_idx = values["used_idx"] & 0xFFFF
        except (KeyError, TypeError, ValueError, VmemError) as exc:
            raise MigrationError(f"virtio-mmio: invalid transport state: {exc!r}") from exc
        for key in _SAVED_INTS[:10]:
            setattr(self, key, values[key])
        self.queue_ready = ready
        self.vq = vq


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
