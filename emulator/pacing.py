"""Teaching pace (vmemlab's own control, not QEMU's): slow the protocol itself down.

Slowing the vCPU (``speed``) does not make a resize watchable: the device answers a request
the moment the guest notifies it. The pacer works where the protocol happens instead:

* a virtio-mem queue notification is *held*: the request stays in the ring, in flight, for
  ``pace_s`` seconds, while the guest waits in its ``WAIT`` call for the used ring (as it
  would for a slow device); then the vCPU thread answers it (``Board.answer_queue``);
* each step the guest's driver reports (probe, plug, unplug, retry) holds the guest for the
  same moment before it goes on (the vCPU simply is not run until then);
* ``pause_after_reset``: after a system reset the machine stops in the all-unplugged state
  until it is continued;
* ``step_request``: run until the next request is answered, then pause.

The device model stays synchronous and pure: only *when* the transport processes its queue
changes. Everything here runs on the vCPU thread (the notification and the step reports come
from the guest; ``run_due`` from the vCPU loop); the setters only store values.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from device import virtio_mem_protocol as p
from device.errors import VmemError
from device.events import Event
from device.virtio_mem import VirtioMemDevice
from device.virtio_mmio import VirtioMmioTransport
from emulator.states import DriverState

MEM_REQUEST_QUEUE = 0  # virtio-mem's one queue in the spec (PLUG, UNPLUG, UNPLUG_ALL, STATE)
MAX_PACE_MS = 10_000  # a request held longer than 10 s teaches nothing more
HELD_STEPS = frozenset({DriverState.PROBING, DriverState.PLUGGING, DriverState.UNPLUGGING,
                        DriverState.RETRYING})


@dataclass(frozen=True, slots=True)
class RequestHeld(Event):
    """The guest notified a request the teaching pace holds in flight for ``pace_ms``
    before the device answers it (vmemlab's teaching control)."""

    kind: ClassVar[str] = "request_held"
    device: str
    type: str  # PLUG, UNPLUG, UNPLUG_ALL, STATE ("?" when the ring cannot be read yet)
    addr: int
    nb_blocks: int
    pace_ms: int


@dataclass(frozen=True, slots=True)
class PaceChange(Event):
    """The teaching pace, "pause after reset" or a request step changed."""

    kind: ClassVar[str] = "pace"
    pace_ms: int
    pause_after_reset: bool
    stepping: bool


@dataclass
class _Held:
    transport: VirtioMmioTransport
    index: int
    due: float
    event: RequestHeld


def _peek(transport: VirtioMmioTransport, index: int) -> tuple[str, int, int]:
    """The next available request of the queue, read without taking it (the device pops it
    for real when it answers; a bad ring breaks the device then, not here)."""
    vq = transport.queue(index)
    if vq is None:
        return "?", 0, 0
    before = vq.last_avail_idx
    try:
        chain = vq.pop()
        if chain is None:
            return "?", 0, 0
        req = p.unpack_request(chain.read(p.REQUEST_SIZE).ljust(p.REQUEST_SIZE, b"\0"))
        return p.REQUEST_NAMES.get(req.type, f"type {req.type}"), req.addr, req.nb_blocks
    except VmemError:
        return "?", 0, 0
    finally:
        vq.last_avail_idx = before


class RequestPacer:
    """The machine's teaching pace; see the module docstring."""

    def __init__(self, *, emit: Callable[[Event], None],
                 answer: Callable[[VirtioMmioTransport, int], None],
                 pause: Callable[[str], None]) -> None:
        self._emit = emit
        self._answer = answer  # the board processes the queue (under its device lock)
        self._pause = pause  # the machine pauses (after a step)
        self.pace_s = 0.0
        self.pause_after_reset = False
        self.stepping = False  # pause after the next answered request
        self._held: list[_Held] = []
        self._guest_held_until = 0.0
        self.answered = 0  # requests answered after being held (for tests and the page)

    # ---------------------------------------------------------------- settings

    @property
    def pace_ms(self) -> int:
        return round(self.pace_s * 1000)

    def configure(self, *, pace_ms: int | None = None,
                  pause_after_reset: bool | None = None) -> None:
        """Set the pace (0: full speed) and/or "pause after reset"; unchanged when None."""
        if pace_ms is not None:
            if not 0 <= pace_ms <= MAX_PACE_MS:
                raise ValueError(f"pace must be between 0 and {MAX_PACE_MS} ms")
            self.pace_s = pace_ms / 1000
            if not pace_ms:  # full speed: nothing waits any more
                self._guest_held_until = 0.0
                for held in self._held:
                    held.due = 0.0
        if pause_after_reset is not None:
            self.pause_after_reset = bool(pause_after_reset)
        self._announce()

    def step(self) -> None:
        """Pause after the next answered request (the caller then runs the machine)."""
        self.stepping = True
        self._announce()

    def _announce(self) -> None:
        self._emit(PaceChange(self.pace_ms, self.pause_after_reset, self.stepping))

    # ---------------------------------------------------------------- the guest's side

    def take_notify(self, transport: VirtioMmioTransport, index: int) -> bool:
        """A queue notification: True when the pacer holds it (the caller must not pass it
        on). Only virtio-mem's request queue is paced, and only when a pace or a step is set.
        """
        if not (self.pace_s or self.stepping) or not isinstance(transport.device,
                                                                VirtioMemDevice):
            return False
        if index != MEM_REQUEST_QUEUE:
            return False  # the experimental guest → host queue: its policy answers at once
        if any(h.transport is transport and h.index == index for h in self._held):
            return True  # already held: its answer takes whatever the ring holds then
        kind, addr, nb_blocks = _peek(transport, index)
        event = RequestHeld(transport.device.id, kind, addr, nb_blocks, self.pace_ms)
        self._held.append(_Held(transport, index, time.monotonic() + self.pace_s, event))
        self._emit(event)
        return True

    def driver_step(self, state: DriverState | None) -> bool:
        """The guest reported a driver step: True when the guest must wait a moment."""
        if not self.pace_s or state not in HELD_STEPS:
            return False
        self._guest_held_until = time.monotonic() + self.pace_s
        return True

    # ---------------------------------------------------------------- the vCPU loop

    def guest_held(self) -> bool:
        """The guest waits out a driver step's moment."""
        return time.monotonic() < self._guest_held_until

    def due_now(self) -> bool:
        now = time.monotonic()
        return any(h.due <= now for h in self._held)

    def next_due(self) -> float | None:
        """Seconds until the pacer has something to do (None: nothing is waiting)."""
        now = time.monotonic()
        times = [h.due for h in self._held]
        if self._guest_held_until > now:
            times.append(self._guest_held_until)
        if not times:
            return None
        return max(0.0, min(times) - now)

    def run_due(self) -> None:
        """Answer the held requests whose moment is over (vCPU thread, machine running)."""
        now = time.monotonic()
        if self._guest_held_until and now >= self._guest_held_until:
            self._guest_held_until = 0.0
        due = [h for h in self._held if h.due <= now]
        if not due:
            return
        if self.stepping:
            due = due[:1]
        for held in due:
            self._held.remove(held)
            self._answer(held.transport, held.index)
            self.answered += 1
        if self.stepping:
            self.stepping = False
            self._pause("step-request")
            self._announce()

    def held(self) -> list[RequestHeld]:
        """The requests in flight now (oldest first)."""
        return [h.event for h in self._held]

    def flush(self) -> None:
        """Answer every held request now (before a save: a saved ring holds no secrets)."""
        for held in list(self._held):
            self._held.remove(held)
            self._answer(held.transport, held.index)
        self._guest_held_until = 0.0

    def reset(self) -> None:
        """A system reset: the devices forgot their rings; nothing is held any more."""
        self._held.clear()
        self._guest_held_until = 0.0
