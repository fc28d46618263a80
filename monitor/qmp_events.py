"""Machine events -> QMP events, with QEMU's per-device throttling.

QEMU throttles ``MEMORY_DEVICE_SIZE_CHANGE`` to one event per second per ``qom-path`` and
``BALLOON_CHANGE`` to one a second (``monitor_qapi_event_queue``): the first change is
delivered at once; changes inside that second are merged into one event, delivered about 1 s
after the previous one, carrying the last size *and the timestamp of the last change*; the last
value is never lost. Other events (``RESET``, ``STOP``, ``RESUME``, ``SHUTDOWN``,
``ACPI_DEVICE_OST``, ``DEVICE_DELETED``) are delivered at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.events import Record
    from emulator.machine import Machine

Sink = Callable[[dict[str, Any]], None]
THROTTLED = {"MEMORY_DEVICE_SIZE_CHANGE": 1.0, "BALLOON_CHANGE": 1.0}
#: every event vmemlab emits, in the order of QEMU 7.2's schema (qapi-schema.json includes
#: run-state.json, qdev.json, machine.json, acpi.json in that order); ``query-events`` lists
#: exactly these. :func:`make_event` refuses any
#: other name, so an event added without being declared here fails its first test.
EVENTS: tuple[str, ...] = (
    "SHUTDOWN", "RESET", "STOP", "RESUME", "SUSPEND", "WAKEUP",
    "GUEST_PANICKED",  # run-state.json
    "DEVICE_DELETED",  # qdev.json
    "BALLOON_CHANGE", "MEMORY_DEVICE_SIZE_CHANGE",  # machine.json
    "ACPI_DEVICE_OST",  # acpi.json
    # vmemlab's experiment (docs/extensions.md): one event per guest -> host request
    "X_VIRTIO_MEM_GUEST_REQUEST",
)


def timestamp(wall: float | None = None) -> dict[str, int]:
    """QEMU's ``{"seconds": …, "microseconds": …}``."""
    wall = time.time() if wall is None else wall
    seconds = int(wall)
    return {"seconds": seconds, "microseconds": round((wall - seconds) * 1e6) % 1_000_000}


def make_event(name: str, data: dict[str, Any] | None, wall: float | None = None
               ) -> dict[str, Any]:
    if name not in EVENTS:
        raise ValueError(f"QMP event {name} is not declared in monitor.qmp_events.EVENTS")
    msg: dict[str, Any] = {"timestamp": timestamp(wall), "event": name}
    if data is not None:
        msg["data"] = data
    return msg


class _Slot:
    __slots__ = ("pending", "timer")

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None
        self.timer: threading.Timer | None = None


class RateLimiter:
    """QEMU's event throttle: per key, at most one delivery per ``period`` seconds."""

    def __init__(self, deliver: Sink, period: float = 1.0) -> None:
        self._deliver = deliver
        self.period = period
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._closed = False

    def submit(self, key: str, msg: dict[str, Any]) -> None:
        with self._lock:
            if self._closed:
                return
            slot = self._slots.get(key)
            if slot is not None:
                slot.pending = msg  # merged: last value, last timestamp
                return
            slot = self._slots[key] = _Slot()
            self._arm(key, slot)
        self._deliver(msg)

    def _arm(self, key: str, slot: _Slot) -> None:
        timer = threading.Timer(self.period, self._expire, args=(key,))
        timer.daemon = True
        slot.timer = timer
        timer.start()

    def _expire(self, key: str) -> None:
        with self._lock:
            slot = self._slots.get(key)
            if slot is None or self._closed:
                return
            msg = slot.pending
            if msg is None:
                del self._slots[key]
                return
            slot.pending = None
            self._arm(key, slot)
        self._deliver(msg)

    def flush(self) -> None:
        """Deliver every pending merged event now (used on quit)."""
        with self._lock:
            pending = [s.pending for s in self._slots.values() if s.pending is not None]
            for slot in self._slots.values():
                slot.pending = None
        for msg in pending:
            self._deliver(msg)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for slot in self._slots.values():
                if slot.timer is not None:
                    slot.timer.cancel()
            self._slots.clear()


class EventTranslator:
    """Subscribes to a machine's bus and fans QMP events out to sinks (QMP clients)."""

    def __init__(self, machine: Machine, period: float = 1.0) -> None:
        self.machine = machine
        self._lock = threading.Lock()
        self._sinks: list[Sink] = []
        self._state: str = machine.runstate
        self.limiter = RateLimiter(self._fan_out, period)
        self._unsubscribe = machine.bus.subscribe(self._on_record)

    def add_sink(self, sink: Sink) -> Callable[[], None]:
        with self._lock:
            self._sinks.append(sink)

        def remove() -> None:
            with self._lock:
                if sink in self._sinks:
                    self._sinks.remove(sink)

        return remove

    def _fan_out(self, msg: dict[str, Any]) -> None:
        with self._lock:
            sinks = tuple(self._sinks)
        for sink in sinks:
            # a broken client never disturbs the machine or the others
            with contextlib.suppress(Exception):
                sink(msg)

    def emit_now(self, name: str, data: dict[str, Any] | None, wall: float | None = None
                 ) -> None:
        self._fan_out(make_event(name, data, wall))

    def translate(self, record: Record) -> list[tuple[str, dict[str, Any] | None]]:
        """QMP (event, data) pairs for one bus record (also tracks the run state)."""
        ev = record.event
        kind = ev.kind
        out: list[tuple[str, dict[str, Any] | None]] = []
        if kind == "config_change":
            fields: dict[str, int] = getattr(ev, "fields", {})
            if "plugged_size" in fields:
                dev = getattr(ev, "device", "")
                out.append(("MEMORY_DEVICE_SIZE_CHANGE", {
                    "size": fields["plugged_size"],
                    "qom-path": f"/machine/peripheral/{dev}", "id": dev}))
        elif kind == "balloon_actual":  # virtio_balloon_set_config(): the guest's size
            out.append(("BALLOON_CHANGE", {"actual": getattr(ev, "guest_size", 0)}))
        elif kind == "acpi_device_ost":
            out.append(("ACPI_DEVICE_OST", {"info": dict(getattr(ev, "info", {}))}))
        elif kind == "device_deleted":
            dev = getattr(ev, "device", "")
            data = {"device": dev} if dev else {}
            data["path"] = getattr(ev, "path", "")
            out.append(("DEVICE_DELETED", data))
        elif kind == "reset":
            out.append(("RESET", {"guest": bool(getattr(ev, "guest", False)),
                                  "reason": getattr(ev, "reason", "")}))
        elif kind == "guest_mem_request":
            dev = getattr(ev, "device", "")
            out.append(("X_VIRTIO_MEM_GUEST_REQUEST", {
                "id": dev, "qom-path": f"/machine/peripheral/{dev}",
                **{key: getattr(ev, attr) for key, attr in (
                    ("seq", "seq"), ("type", "type"), ("node", "node"), ("size", "size"),
                    ("reason", "reason"), ("policy", "policy"), ("decision", "decision"),
                    ("granted", "granted"), ("requested-size", "requested_size"))}}))
        elif kind == "runstate":
            new = getattr(ev, "state", "")
            old, self._state = self._state, new
            if new == "suspended":  # qemu_system_suspend(): no STOP, a SUSPEND
                out.append(("SUSPEND", None))
            elif old == "suspended" and new == "running":  # qemu_system_wakeup()
                out.append(("WAKEUP", None))
            elif new == "running" and old != "running":
                out.append(("RESUME", None))
            elif new == "shutdown" and getattr(ev, "reason", "").startswith("host-error"):
                out.append(("SHUTDOWN", {"guest": False, "reason": "host-error"}))
            elif new == "shutdown":
                out.append(("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"}))
            elif new == "guest-panicked":
                out.append(("GUEST_PANICKED", {"action": "pause"}))
            elif old == "running":
                out.append(("STOP", None))
        return out

    def _on_record(self, record: Record) -> None:
        for name, data in self.translate(record):
            msg = make_event(name, data, record.wall)
            if name in THROTTLED and data is not None:
                self.limiter.submit(f"{name}:{data.get('qom-path', '')}", msg)
            else:
                self._fan_out(msg)

    def close(self) -> None:
        self._unsubscribe()
        self.limiter.close()
