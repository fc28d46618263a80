"""The machine's observation channel: typed events with monotonically increasing numbers.

Everything above the emulator (monitor, web page, scenarios, recordings) learns what happened
from these records and from ``Machine.snapshot()``, never from the machine's internals. The
device model's own events (requests, responses, config changes, block state) flow through the
same bus, so one sequence number orders all of them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from device.events import Event


@dataclass(frozen=True, slots=True)
class ZeroPageRead(Event):
    """The guest read unplugged memory that holds nothing: it saw zeros (the shared zero
    page) and it cost the host no memory."""

    kind: ClassVar[str] = "zero_page_read"
    device: str
    first_block: int
    count: int
    outside_usable: bool


@dataclass(frozen=True, slots=True)
class UnpluggedWrite(Event):
    """The guest wrote to unplugged memory and the write went through (shipped QEMU protects
    nothing): the host backs those pages again -- the block is "unplugged but resident"
    until a discard (UNPLUG_ALL, reset, or plug and unplug) frees it."""

    kind: ClassVar[str] = "unplugged_write"
    device: str
    first_block: int
    count: int


@dataclass(frozen=True, slots=True)
class Violation(Event):
    """A guest access the stage-2 map refused (it never reached host memory): a write to
    write-protected unplugged memory (x-rfc-write-protect), an access where no memslot is
    mapped (dynamic-memslots: an abort on arm, a dropped write on x86), a fetch from device
    memory, or an address nothing maps."""

    kind: ClassVar[str] = "violation"
    device: str | None
    addr: int
    pc: int
    access: str  # "read" | "write" | "fetch"
    reason: str


@dataclass(frozen=True, slots=True)
class ConsoleOutput(Event):
    """One line the guest printed on its UART."""

    kind: ClassVar[str] = "console"
    line: str


@dataclass(frozen=True, slots=True)
class Reset(Event):
    """A system reset, with QEMU's ``RESET`` event fields."""

    kind: ClassVar[str] = "reset"
    guest: bool
    reason: str
    cmdline: str


@dataclass(frozen=True, slots=True)
class GuestStatus(Event):
    """Something the guest reported about itself (boot, driver state, faults, panic)."""

    kind: ClassVar[str] = "guest_status"
    status: str
    device: str | None = None
    detail: int = 0


@dataclass(frozen=True, slots=True)
class RunStateChange(Event):
    """The machine's run state changed (QEMU's RunState names)."""

    kind: ClassVar[str] = "runstate"
    state: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class GuestCommandDone(Event):
    """A workload command finished inside the guest."""

    kind: ClassVar[str] = "guest_command"
    seq: int
    command: str
    status: int
    values: tuple[int, int]


@dataclass(frozen=True, slots=True)
class MigrationStatus(Event):
    """Progress of a save ("migrate") or load ("incoming")."""

    kind: ClassVar[str] = "migration"
    status: str  # "active" | "completed" | "failed"
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    """An event as published: its number and when it happened."""

    seq: int
    time_ns: int  # monotonic, since the machine was created
    wall: float  # time.time(), for QEMU-style timestamps
    event: Event

    def to_dict(self) -> dict[str, object]:
        return {"seq": self.seq, "time_ns": self.time_ns, "wall": self.wall,
                **self.event.to_dict()}


Subscriber = Callable[[Record], None]


class EventBus:
    """Numbers events, keeps a bounded history and hands each record to subscribers."""

    def __init__(self, history: int = 20_000) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._seq = 0
        self._t0 = time.monotonic_ns()
        self._history: deque[Record] = deque(maxlen=history)
        self._subscribers: list[Subscriber] = []

    @property
    def last_seq(self) -> int:
        return self._seq

    def publish(self, event: Event) -> Record:
        with self._lock:
            self._seq += 1
            record = Record(self._seq, time.monotonic_ns() - self._t0, time.time(), event)
            self._history.append(record)
            subscribers = tuple(self._subscribers)
            self._changed.notify_all()
        for subscriber in subscribers:
            subscriber(record)
        return record

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` for every new record (on the publishing thread: keep it short)."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def since(self, seq: int) -> list[Record]:
        """Records newer than ``seq`` still in the history."""
        with self._lock:
            return [r for r in self._history if r.seq > seq]

    def wait(self, after_seq: int, timeout: float) -> bool:
        """Block until a record newer than ``after_seq`` exists (or the timeout passes)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._seq > after_seq, timeout)
