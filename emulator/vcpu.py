"""The vCPU runner: one worker thread runs the guest; other threads post calls to it.

Other threads never touch Unicorn: they post calls (``call``) that the worker runs when the
vCPU stops at its next safe point, an SMC call. Why never mid-block: ``emu_stop()`` from another
thread (and Unicorn's own ``timeout``, which is the same thing) can land while a hook runs and
make Unicorn leave mid-block with a stale PC; the guest then replays instructions (measured: 21
of 40 boots corrupted under a stream of calls). So the vCPU stops itself inside an SMC call,
where the PC is exact; the guest makes one at least every few milliseconds (WAIT when idle,
YIELD in long loops). Only a guest that makes none for ``STUCK_GUEST_S`` is stopped the
asynchronous way, by the watchdog (docs/engine-notes.md).

The runner also throttles the guest for a room to follow (``speed``) and single-steps it.
What the guest *is* (board), what its calls mean (paravirt) and what a fault does (faults)
live in their own modules; the machine ties them together and owns the run state.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from unicorn import UC_HOOK_INTR, UcError
from unicorn import arm64_const as arm
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from emulator.faults import GuestFaults
from emulator.pacing import RequestPacer
from emulator.paravirt import Paravirt

T = TypeVar("T")

THROTTLED_SLICE_S = 0.002  # how long the guest runs between pauses when slowed down
STUCK_GUEST_S = 1.0  # no safe point for this long: stop the vCPU asynchronously
MIN_SPEED = 0.001
EXCP_SMC = 13  # QEMU's EXCP_* numbers, as UC_HOOK_INTR reports them


class VcpuRunner:
    """The worker thread and its safe-point protocol; see the module docstring."""

    def __init__(self, uc: UcAArch64, paravirt: Paravirt, faults: GuestFaults,
                 pacer: RequestPacer, *,
                 running: Callable[[], bool], before_call: Callable[[], None],
                 after_slice: Callable[[], None],
                 on_crash: Callable[[BaseException], None]) -> None:
        self._uc = uc
        self._paravirt = paravirt
        self._faults = faults
        self._pacer = pacer  # the teaching pace: held requests and driver steps
        self._running = running  # may the guest run (the machine's run state)?
        self._before_call = before_call  # what the guest did before an SMC is told first
        self._after_slice = after_slice
        self._on_crash = on_crash
        self._cond = threading.Condition()
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._thread: threading.Thread | None = None
        self._quit = False
        self._in_emu = False
        self._stop_wanted = False
        self._stop_wanted_since = 0.0
        self._slice_start = 0.0
        self.speed = 1.0  # fraction of the time the vCPU runs (presentation speed control)
        self.watchdog_stops = 0  # asynchronous stops of a guest without safe points (see doc)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)

    # ---------------------------------------------------------------- thread lifetime

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        """The worker thread is running (started and not yet ended)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread (and its watchdog); a no-op if already started."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="vcpu", daemon=True)
            self._thread.start()
            threading.Thread(target=self._watchdog, name="vcpu-watchdog", daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the worker thread (at the guest's next safe point)."""
        with self._cond:
            self._quit = True
            self._cond.notify_all()
        self.kick()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)

    def notify(self) -> None:
        """Something the loop waits for changed (an event for the guest, a new run state)."""
        with self._cond:
            self._cond.notify_all()

    # ---------------------------------------------------------------- calls

    def kick(self) -> None:
        """Ask the vCPU to come back to the loop at its next safe point (see module doc)."""
        with self._cond:
            if not self._stop_wanted:
                self._stop_wanted = True
                self._stop_wanted_since = time.monotonic()
            self._cond.notify_all()

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the vCPU thread between slices and return its result.

        Before the thread exists (``-S``, ``-incoming``), after it ended, and from the vCPU
        thread itself, ``fn`` runs right away on the caller's thread.
        """
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return fn()
        future: Future[T] = Future()
        with self._cond:
            self._calls.append((fn, future))
            self._cond.notify_all()
        self.kick()
        return future.result(timeout)

    def _run_calls(self) -> None:
        while True:
            with self._cond:
                if not self._calls:
                    return
                fn, future = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread, never lost
                future.set_exception(exc)

    # ---------------------------------------------------------------- the loop

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._ready_to_run():
                        if self._quit:
                            return
                        self._cond.wait(self._wait_timeout())
                    if self._quit:
                        return
                    self._stop_wanted = False  # calls posted from here on ask again
                self._run_calls()
                if not self._running():
                    continue
                self._pacer.run_due()
                if not self._running() or self._pacer.guest_held():
                    continue
                if self._paravirt.waiting and not self._paravirt.finish_wait(self._uc):
                    continue
                self.run_slice()
                if self.speed < 1.0:
                    self._throttle()
        except BaseException as exc:  # a bug in the runner itself: contain and report it
            self._on_crash(exc)
        finally:
            self._fail_calls()

    def _fail_calls(self) -> None:
        """Calls still queued when the thread ends must not hang their callers."""
        with self._cond:
            calls, self._calls = list(self._calls), deque()
        for _fn, future in calls:
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError("the vCPU thread has ended"))

    def _ready_to_run(self) -> bool:
        if self._quit or self._calls:
            return True
        if not self._running():
            return False
        if self._pacer.due_now():
            return True
        if self._pacer.guest_held():
            return False
        if not self._paravirt.waiting:
            return True
        return self._paravirt.deliverable() != 0

    def _wait_timeout(self) -> float | None:
        if not self._running():
            return None
        times = [t for t in (self._paravirt.wait_timeout(), self._pacer.next_due())
                 if t is not None]
        return min(times) if times else None

    def _watchdog(self) -> None:
        """Stop a guest that makes no SMC call for a long time (it is stuck or looping)."""
        while not self._quit:
            with self._cond:
                self._cond.wait(STUCK_GUEST_S / 4)
                stuck = (self._stop_wanted and self._in_emu
                         and time.monotonic() - self._stop_wanted_since > STUCK_GUEST_S)
            if stuck:
                self.watchdog_stops += 1  # each one may have replayed guest instructions
                self._uc.emu_stop()

    def _throttle(self) -> None:
        """Slow the guest down for a room to follow: sleep so it runs ``speed`` of the time."""
        pause = THROTTLED_SLICE_S * (1.0 / max(self.speed, MIN_SPEED) - 1.0)
        with self._cond:
            self._cond.wait_for(lambda: self._quit or bool(self._calls), pause)

    def set_speed(self, speed: float) -> None:
        self.speed = float(speed)
        self.notify()

    # ---------------------------------------------------------------- running guest code

    def run_slice(self, count: int = 0) -> None:
        """Run the guest until it stops at a safe point (or for ``count`` instructions)."""
        uc = self._uc
        pc = uc.reg_read(arm.UC_ARM64_REG_PC)
        self._faults.clear()
        self._in_emu = True
        self._slice_start = time.monotonic()
        try:
            uc.emu_start(pc, 0, count=count)
        except UcError as err:
            self._faults.on_engine_error(err, int(uc.reg_read(arm.UC_ARM64_REG_PC)))
        except Exception as exc:  # a bug in a hook: contain it, report it, stop the vCPU
            self._on_crash(exc)
        finally:
            self._in_emu = False
        self._after_slice()

    def step(self, instructions: int) -> int:
        """Run ``instructions`` guest instructions (on the vCPU thread); the new PC.

        A guest idling in its WAIT call does not move until an event arrives, as on hardware
        a CPU sitting in WFI would not.
        """
        if not self._paravirt.waiting or self._paravirt.finish_wait(self._uc):
            self.run_slice(count=instructions)
        return int(self._uc.reg_read(arm.UC_ARM64_REG_PC))

    def _on_intr(self, uc: UcAArch64, intno: int, _ud: object) -> None:
        if intno != EXCP_SMC:
            # UDEF, SVC, BRK, HVC: delivered to the guest as a synchronous exception so its
            # handler can report it; Unicorn would otherwise loop on it
            self._faults.trapped(intno, int(uc.reg_read(arm.UC_ARM64_REG_PC)))
            uc.emu_stop()
            return
        x = [int(uc.reg_read(arm.UC_ARM64_REG_X0 + i)) for i in range(6)]
        self._before_call()
        stop = self._paravirt.smc(uc, x[0] & 0xFFFF_FFFF, x)
        # every SMC is a safe point: the PC is exact, so stopping here never replays anything
        if stop or self._stop_wanted or (
                self.speed < 1.0 and time.monotonic() - self._slice_start > THROTTLED_SLICE_S):
            uc.emu_stop()
