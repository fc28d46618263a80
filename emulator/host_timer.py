"""A re-armable one-shot host timer: what QEMU's ``timer_mod`` gives a device.

The balloon's statistics poll runs on the host's clock, not the guest's: when it fires, the
device hands the kept stats buffer back to the guest. One ``threading.Timer`` at a time; arming
again replaces it, ``None`` stops it, ``close`` stops it for good. The callback runs on the
timer's own thread and must take whatever lock it needs itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

MAX_DELAY_S = float(0xFFFF_FFFF)  # guest-stats-polling-interval is at most UINT32_MAX seconds


class HostTimer:
    """One timer for one device; see the module docstring."""

    def __init__(self, fire: Callable[[], None], name: str = "vmemlab-timer") -> None:
        self._fire = fire
        self._name = name
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._generation = 0
        self._closed = False

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._timer is not None

    def arm(self, seconds: float | None) -> None:
        """Fire in ``seconds`` (replacing any earlier arming); None stops the timer."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._generation += 1
            if seconds is None or self._closed:
                return
            generation = self._generation
            timer = threading.Timer(min(max(seconds, 0.0), MAX_DELAY_S), self._run,
                                    args=(generation,))
            timer.daemon = True
            timer.name = self._name
            self._timer = timer
            timer.start()

    def _run(self, generation: int) -> None:
        with self._lock:
            if self._closed or generation != self._generation:
                return
            self._timer = None
        self._fire()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._generation += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
