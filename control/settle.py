"""When has the guest finished reacting? One definition of "settled" for every front-end.

A device is *settled* when its driver is idle at the size it was asked for -- the requested
size, capped by the usable region (QEMU accepts a requested size above the region, and the
RFC's shrink-on-reboot area can be smaller than requested for a while) -- or when the driver
has stopped for good (disabled, broken, failed), or has given up for now (stopped short on
unmovable pages, out of memory for its memmap, waiting for added memory to be onlined)
*in answer to the latest change*: a
"stopped-short" reported before the host's last resize is not an answer to it.

``SettleWatch`` tells the latter from the machine's event stream (config-change
notifications and resets on one side, the driver's reports on the other), so it holds
whoever made the change: HMP, QMP, the page or a scenario.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from emulator.events import EventBus, Record
from emulator.snapshot import BalloonSnapshot, DeviceSnapshot
from emulator.states import DriverState

STOPPED_FOR_GOOD = frozenset({DriverState.DISABLED, DriverState.BROKEN, DriverState.FAILED})
GAVE_UP_FOR_NOW = frozenset({DriverState.STOPPED_SHORT, DriverState.NO_MEMORY,
                             DriverState.NO_SPACE})


def target_size(dev: DeviceSnapshot) -> int:
    """What the driver converges to: the requested size within the usable region."""
    return min(dev.requested_size, dev.usable_region_size)


def device_settled(dev: DeviceSnapshot, *, answered: bool = True) -> bool:
    """``dev`` is settled; ``answered``: its driver reported since the last change."""
    state = DriverState(dev.driver_state)
    if state is DriverState.IDLE:
        return dev.plugged_size == target_size(dev)
    if state in STOPPED_FOR_GOOD:
        return True
    return state in GAVE_UP_FOR_NOW and answered


def balloon_settled(balloon: BalloonSnapshot, *, answered: bool = True) -> bool:
    """The balloon is settled: its driver is idle at the target -- or idle short of it after
    answering the latest change (DEFLATE_ON_OOM took pages back; Linux waits for the next
    change) -- or it stopped for good, or it is out of puff and said so since the change."""
    state = DriverState(balloon.driver_state)
    if state in STOPPED_FOR_GOOD:
        return True
    if state is DriverState.IDLE:
        return balloon.actual == balloon.num_pages or answered
    return state is DriverState.RETRYING and answered


class SettleWatch:
    """Per device, whether the driver's last report came after the last change it must answer.

    It subscribes to the bus and then reads the bus's history, so a watch made late knows
    what happened before it (within the history the bus keeps).
    """

    def __init__(self, bus: EventBus) -> None:
        self._lock = threading.Lock()
        self._changed: dict[str, int] = {}
        self._changed_all = 0
        self._reported: dict[str, int] = {}
        self._unsubscribe: Callable[[], None] = bus.subscribe(self._on_record)
        for record in bus.since(0):
            self._on_record(record)

    def _on_record(self, record: Record) -> None:
        event = record.event
        kind = event.kind
        if kind == "config_change" and getattr(event, "notified", False):
            device = getattr(event, "device", "")
            with self._lock:
                self._changed[device] = max(self._changed.get(device, 0), record.seq)
        elif kind == "reset":
            with self._lock:
                self._changed_all = max(self._changed_all, record.seq)
        elif kind == "guest_status":
            device = getattr(event, "device", None)
            if device is not None:
                with self._lock:
                    self._reported[device] = max(self._reported.get(device, 0), record.seq)

    def answered(self, dev_id: str, upto: int | None = None) -> bool:
        """The driver reported since the last change. ``upto``: the event number of the
        snapshot the answer is combined with -- a report newer than that snapshot means the
        snapshot's driver state is stale, so the answer is no."""
        with self._lock:
            changed = max(self._changed.get(dev_id, 0), self._changed_all)
            reported = self._reported.get(dev_id, 0)
            return reported > changed and (upto is None or reported <= upto)

    def settled(self, dev: DeviceSnapshot) -> bool:
        return device_settled(dev, answered=self.answered(dev.id))

    def close(self) -> None:
        self._unsubscribe()
