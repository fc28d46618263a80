"""A host-side autoscaler for virtio-mem: vmemlab's experiment of what users ask for today
(Cloud Hypervisor's and Neon's users: "a balloon-like automatic policy on top of virtio-mem").
Not part of QEMU, virtio or Linux: docs/extensions.md.

No guest change: the host reads the guest's memory statistics -- the virtio-balloon's stats
queue (``stat-free-memory``) when the machine has a balloon that reports, else the guest's own
status report (the guest view: free pages in boot RAM and in the device's memory) -- and moves
``requested_size`` with hysteresis: grow by ``step`` when free memory falls below ``low``,
shrink by ``step`` when it rises above ``high``, hold in between. It decides only while the
device is settled (the driver caught up with the last decision), so one decision is carried
out before the next is taken, and never beyond ``[min_size, max_size]``. Every decision is
published on the machine's bus (``autoscale`` events): the page draws them on its chart.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from control.errors import ENGINE_ERRORS, ControlError, ErrorKind
from device.events import Event
from emulator.machine import Machine
from emulator.snapshot import MachineSnapshot

PAGE = 4096
MIN_INTERVAL = 0.05
_REFUSALS: tuple[type[BaseException], ...] = (ControlError, *ENGINE_ERRORS)


@dataclass(frozen=True)
class AutoscalePolicy:
    low: int  # bytes of free guest memory below which the device grows
    high: int  # ... above which it shrinks (must be > low: the hysteresis band)
    step: int  # bytes per decision (a multiple of the block size)
    min_size: int = 0
    max_size: int | None = None  # None: the region size
    interval: float = 0.5  # seconds between looks

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "step": self.step,
                "min-size": self.min_size, "max-size": self.max_size,
                "interval": self.interval}


@dataclass(frozen=True, slots=True)
class AutoscaleDecision(Event):
    """One look of the autoscaler that changed ``requested_size`` (or could not)."""

    kind: ClassVar[str] = "autoscale"
    device: str
    free: int  # bytes of free guest memory it saw
    source: str  # "balloon-stats" | "guest-report"
    action: str  # "grow" | "shrink" | "hold"
    old: int
    new: int
    reason: str


def decide(free: int, requested: int, region: int, block: int,
           policy: AutoscalePolicy) -> tuple[str, int, str]:
    """(action, new requested size, why): pure, so the hysteresis is easy to test."""
    top = min(region, policy.max_size if policy.max_size is not None else region)
    if free < policy.low:
        new = min(top, requested + policy.step) // block * block
        if new > requested:
            return "grow", new, f"free {free >> 20} MiB < low {policy.low >> 20} MiB"
        return "hold", requested, "at the maximum"
    if free > policy.high:
        new = max(policy.min_size, requested - policy.step)
        new = -(-new // block) * block
        if new < requested:
            return "shrink", new, f"free {free >> 20} MiB > high {policy.high >> 20} MiB"
        return "hold", requested, "at the minimum"
    return "hold", requested, "inside the band"


def guest_free(snap: MachineSnapshot, device: str) -> tuple[int, str] | None:
    """Free guest memory and where the number came from (None: the guest said nothing yet)."""
    balloon = snap.balloon
    if balloon is not None and balloon.stats_last_update \
            and balloon.stats.get("stat-free-memory", -1) >= 0:
        return balloon.stats["stat-free-memory"], "balloon-stats"
    view = snap.guest
    if view is None:
        return None
    pages = view.boot_free + sum(sum(u[2] for u in d.usage) for d in view.devices if d)
    return pages * PAGE, "guest-report"


class Autoscaler:
    """One device's autoscaler; :meth:`look` is one decision, :meth:`start` runs it on a
    thread every ``policy.interval`` seconds until :meth:`stop` or the machine closes."""

    def __init__(self, machine: Machine, device: str, policy: AutoscalePolicy,
                 settled: Callable[[str], bool], resize: Callable[[str, int], None]) -> None:
        self.machine = machine
        self.device = device
        self.policy = policy
        self._settled = settled
        self._resize = resize
        self.decisions: deque[AutoscaleDecision] = deque(maxlen=64)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def look(self) -> AutoscaleDecision | None:
        """Read the statistics and act once (None: nothing to go by, or not settled)."""
        machine = self.machine
        if machine.closed or not self._settled(self.device):
            return None
        snap = machine.snapshot()
        seen = guest_free(snap, self.device)
        if seen is None:
            return None
        free, source = seen
        dev = snap.device(self.device)
        action, new, why = decide(free, dev.requested_size, dev.region_size, dev.block_size,
                                  self.policy)
        if action == "hold":
            return None
        decision = AutoscaleDecision(self.device, free, source, action, dev.requested_size,
                                     new, why)
        self._resize(self.device, new)
        self.decisions.append(decision)
        machine.bus.publish(decision)
        return decision

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"autoscale-{self.device}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(max(MIN_INTERVAL, self.policy.interval)):
            if self.machine.closed:
                return
            try:
                self.look()
            except _REFUSALS:  # refused now (a budget, a reset): try again next time
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


class AutoscaleControl:
    """The autoscalers of one machine (at most one per device)."""

    def __init__(self, machine: Machine, settled: Callable[[str], bool],
                 resize: Callable[[str, int], None]) -> None:
        self.machine = machine
        self._settled = settled
        self._resize = resize
        self._lock = threading.Lock()
        self._running: dict[str, Autoscaler] = {}

    def enable(self, device: str, policy: AutoscalePolicy, *, start: bool = True
               ) -> Autoscaler:
        dev = self.machine.devices.get(device)
        if dev is None:
            raise ControlError(f"Device '{device}' not found", ErrorKind.NOT_FOUND)
        bs = dev.block_size
        if policy.step <= 0 or policy.step % bs:
            raise ControlError(f"'step' has to be a positive multiple of 'block-size' ({bs:#x})")
        if not 0 <= policy.low < policy.high:
            raise ControlError("'low' has to be below 'high' (the hysteresis band)")
        if policy.min_size % bs or (policy.max_size is not None and policy.max_size % bs):
            raise ControlError(f"sizes have to be multiples of 'block-size' ({bs:#x})")
        self.disable(device)
        scaler = Autoscaler(self.machine, device, policy, self._settled, self._resize)
        with self._lock:
            self._running[device] = scaler
        if start:
            scaler.start()
        return scaler

    def disable(self, device: str) -> bool:
        with self._lock:
            scaler = self._running.pop(device, None)
        if scaler is not None:
            scaler.stop()
        return scaler is not None

    def info(self, device: str) -> dict[str, Any]:
        with self._lock:
            scaler = self._running.get(device)
        if scaler is None:
            return {"id": device, "enabled": False, "decisions": []}
        return {"id": device, "enabled": True, **scaler.policy.to_dict(),
                "decisions": [asdict(d) for d in list(scaler.decisions)]}

    def close(self) -> None:
        with self._lock:
            scalers = list(self._running.values())
            self._running.clear()
        for scaler in scalers:
            scaler.stop()
