"""The console UART: bytes the guest writes become lines on the event bus.

A byte written to the data register (``abi.UART_BASE``) is one character; a newline publishes
a :class:`ConsoleOutput` and keeps the line in a bounded history for late readers (the page,
lesson goals). An over-long line is cut at ``MAX_LINE`` bytes: a guest printing without end
costs the host a bounded amount.
"""

from __future__ import annotations

from collections import deque

from emulator.events import ConsoleOutput, EventBus

MAX_LINE = 4096
HISTORY = 2000


class GuestConsole:
    """Line assembly for one machine's UART."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._buf = bytearray()
        self.lines: deque[str] = deque(maxlen=HISTORY)

    def write(self, byte: int) -> None:
        """One byte from the guest (called on the vCPU thread)."""
        if byte == 0x0A:
            line = self._buf.decode("utf-8", "replace")
            self._buf.clear()
            self.lines.append(line)
            self._bus.publish(ConsoleOutput(line))
        elif byte != 0x0D and len(self._buf) < MAX_LINE:
            self._buf.append(byte)
