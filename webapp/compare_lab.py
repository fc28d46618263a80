"""The comparison lab: two or three machines of one visitor, one per mechanism, driven together.

``/compare`` (``webapp.compare_routes``) gives a browser session a lab: the same machine size
and guest on each mechanism (``control.mechanisms``), one action bar for all of them, and a
table filled from what each action measured. The lab's machines belong to the session like
its sandbox machine does: made only for a request with the session cookie, counted against
``VMEMLAB_MAX_MACHINES`` and the resident-memory budget, closed when the visitor has not
looked at them for ``VMEMLAB_IDLE_RECLAIM`` seconds. An action runs on a background thread,
on every machine at once; the page polls the lab's state. Nothing an action does can take
the server down: a refusal is recorded as that mechanism's result, a bug is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from control import ControlError, ErrorKind, MachineControl, control_for
from control.mechanisms import LabSize, Measured, Mechanism, make, mechanisms
from control.sizes import format_mib
from emulator.config import GiB, MiB
from emulator.machine import Machine
from webapp import compare_view

log = logging.getLogger(__name__)

#: action -> (table row, what it does); the page's action bar, in order
ACTIONS: dict[str, tuple[str, str]] = {
    "give-back": ("returned", "give back 1 GiB"),
    "pin": ("pinned", "guest pins 16 MiB"),
    "rogue-write": ("cheat", "rogue write"),
    "reboot": ("reboot", "reboot"),
    "reboot-no-driver": ("no-driver", "reboot without the driver"),
    "migrate": ("migration", "migrate"),
}
ROWS: tuple[tuple[str, str], ...] = (
    ("granularity", "granularity (what one step gives back)"),
    ("returned", "bytes returned to the host (give back 1 GiB)"),
    ("pinned", "guest pins 16 MiB"),
    ("cheat", "could the guest cheat? (rogue write where it gave memory back)"),
    ("reboot", "what the guest saw after a reboot"),
    ("no-driver", "reboot into a guest without the driver, which then uses its memory"),
    ("migration", "what migration needed"),
)
MAX_MECHANISMS = 3
GIVE_BACK = 1 * GiB
PIN = 16 * MiB
ONLINE = ("online", "online_movable")


@dataclass
class LabMachine:
    mechanism: Mechanism
    machine: Machine
    results: dict[str, Measured] = field(default_factory=dict)
    resident: int = 0

    @property
    def control(self) -> MachineControl:
        return control_for(self.machine)


class CompareLab:
    """One visitor's lab; see the module docstring."""

    def __init__(self, names: list[str], size: LabSize,
                 admit: Callable[[int], None]) -> None:
        self.size = size
        self.names = list(names)
        self.machines: list[LabMachine] = []
        self._admit = admit
        self.busy: str | None = "starting"
        self.done: list[str] = []
        self.last_seen = time.monotonic()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._start, name="compare-lab", daemon=True)
        for name in names:
            mech = make(name, size)
            machine = Machine(mech.config())
            control_for(machine).admission = admit
            self.machines.append(LabMachine(mech, machine))
        self._thread.start()

    # ---------------------------------------------------------------- lifetime

    def _each(self, work: Callable[[LabMachine], None]) -> None:
        with ThreadPoolExecutor(max_workers=len(self.machines) or 1) as pool:
            for future in [pool.submit(self._guarded, work, lm) for lm in self.machines]:
                future.result()

    def _guarded(self, work: Callable[[LabMachine], None], lm: LabMachine) -> None:
        try:
            work(lm)
        except ControlError as err:  # refused or failed on purpose (e.g. closed meanwhile)
            if not lm.machine.closed:
                log.warning("compare lab: %s: %s", lm.mechanism.name, err.message)
        except Exception:  # a bug must not take the lab or the server down
            log.exception("compare lab: %s failed", lm.mechanism.name)

    def _start(self) -> None:
        def boot(lm: LabMachine) -> None:
            lm.machine.start()
            lm.mechanism.wait_booted(lm.control)
            lm.mechanism.prepare(lm.control)
            lm.mechanism.settle(lm.control)
            lm.results["granularity"] = Measured(lm.mechanism.unit_text)
        self._each(boot)
        with self._lock:
            self.busy = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for lm in self.machines:
            lm.control.close()

    # ---------------------------------------------------------------- actions

    def run(self, action: str) -> None:
        """Start ``action`` on every machine (one action at a time per lab)."""
        if action not in ACTIONS:
            raise ControlError(f"unknown action '{action}' (have: {', '.join(ACTIONS)})")
        with self._lock:
            if self._closed:
                raise ControlError("this lab was closed; start a new one", ErrorKind.REFUSED)
            if self.busy is not None:
                raise ControlError(f"the lab is busy ({self.busy}); try again when it is done",
                                   ErrorKind.BUSY)
            self.busy = action
        threading.Thread(target=self._run, args=(action,), name=f"compare-{action}",
                         daemon=True).start()

    def _run(self, action: str) -> None:
        row = ACTIONS[action][0]

        def one(lm: LabMachine) -> None:
            try:
                result = self._act(lm, action)
            except ControlError as err:
                result = Measured(f"refused: {err.message}", ok=False)
            except Exception as err:  # a bug or a timeout: shown, logged, the lab goes on
                log.exception("compare lab: %s on %s failed", action, lm.mechanism.name)
                result = Measured(f"failed: {type(err).__name__}: {err}", ok=False)
            lm.results[row] = result
            if action == "give-back":
                unit = result.values.get("unit")
                if unit:
                    lm.results["granularity"] = Measured(str(unit))
        try:
            self._each(one)
        finally:
            with self._lock:
                self.done.append(action)
                self.busy = None

    def _act(self, lm: LabMachine, action: str) -> Measured:
        mech, control = lm.mechanism, lm.control
        if action == "give-back":
            return mech.give_back(control, GIVE_BACK)
        if action == "pin":
            return mech.pin(control, PIN)
        if action == "rogue-write":
            return mech.rogue_write(control)
        if action in ("reboot", "reboot-no-driver"):
            return mech.reboot(control, driver=action == "reboot")
        result, dest = mech.migrate(control)
        if dest is not None:  # the lab goes on with the destination, started and running
            old = lm.machine
            control_for(dest).admission = self._admit
            lm.machine = dest
            control_for(old).close()
        return result

    # ---------------------------------------------------------------- views

    def measure(self) -> int:
        """Host memory the lab's guests hold now (pagemap scans)."""
        total = 0
        for lm in self.machines:
            try:
                snap = lm.machine.snapshot(residency=True)
            except Exception:  # closed meanwhile
                lm.resident = 0
                continue
            lm.resident = ((snap.boot_resident or 0)
                           + sum(sum(d.resident or ()) for d in snap.devices)
                           + sum(d.resident or 0 for d in snap.dimms))
            total += lm.resident
        return total

    def resident(self) -> int:
        return sum(lm.resident for lm in self.machines)

    def state(self) -> dict[str, Any]:
        self.last_seen = time.monotonic()
        self.measure()
        columns = []
        for lm in self.machines:
            view = compare_view.column(lm.mechanism, lm.control)
            view["results"] = {row: {"text": m.text, "ok": m.ok} for row, m in lm.results.items()}
            view["resident"] = lm.resident
            view["resident_text"] = format_mib(lm.resident)
            columns.append(view)
        return {"busy": self.busy, "done": list(self.done), "columns": columns,
                "rows": [{"key": k, "title": t} for k, t in ROWS],
                "actions": [{"key": k, "title": t} for k, (_row, t) in ACTIONS.items()],
                "size": {"boot": self.size.boot, "extra": self.size.extra,
                         "online": self.size.online}}


class CompareLabs:
    """Every session's lab (at most one each), within the server's limits."""

    def __init__(self, max_machines: Callable[[], int], in_use: Callable[[], int],
                 check_budget: Callable[[int], None], idle_reclaim: float) -> None:
        self._labs: dict[str, CompareLab] = {}
        self._lock = threading.Lock()
        self._max_machines = max_machines
        self._in_use = in_use  # machines the rest of the server runs
        self._check_budget = check_budget
        self.idle_reclaim = idle_reclaim

    def get(self, token: str) -> CompareLab | None:
        with self._lock:
            return self._labs.get(token)

    def machines(self) -> int:
        with self._lock:
            return sum(len(lab.machines) for lab in self._labs.values())

    def resident(self) -> int:
        with self._lock:
            labs = list(self._labs.values())
        return sum(lab.resident() for lab in labs)

    def admit(self, growth: int) -> None:
        try:
            self._check_budget(growth)
        except ControlError:
            raise
        except Exception as err:  # the session manager's BudgetError
            raise ControlError(str(err), ErrorKind.EXHAUSTED) from None

    def start(self, token: str, names: list[str], online: str) -> CompareLab:
        """A new lab for ``token`` (its old one is closed first)."""
        known = mechanisms()
        if not 2 <= len(names) <= MAX_MECHANISMS or len(set(names)) != len(names):
            raise ControlError(f"choose two or three different mechanisms (have: "
                               f"{', '.join(known)})")
        for name in names:
            if name not in known:
                raise ControlError(f"unknown mechanism '{name}' (have: {', '.join(known)})")
        if online not in ONLINE:
            raise ControlError(f"memhp_default_state: expected one of {', '.join(ONLINE)}")
        self.stop(token)
        if self._in_use() + self.machines() + len(names) > self._max_machines():
            raise ControlError(f"this server already runs {self._max_machines()} machines "
                               "(its limit); try again later", ErrorKind.EXHAUSTED)
        self.admit(0)
        lab = CompareLab(names, LabSize(online=online), self.admit)
        with self._lock:
            self._labs[token] = lab
        return lab

    def stop(self, token: str) -> CompareLab | None:
        with self._lock:
            lab = self._labs.pop(token, None)
        if lab is not None:
            lab.close()
        return lab

    def reap(self) -> None:
        """Close labs nobody looked at for ``idle_reclaim`` seconds (a pump chore)."""
        now = time.monotonic()
        with self._lock:
            idle = [t for t, lab in self._labs.items()
                    if lab.busy is None and now - lab.last_seen > self.idle_reclaim]
        for token in idle:
            self.stop(token)
        with self._lock:
            labs = list(self._labs.values())
        for lab in labs:
            lab.measure()

    def close_all(self) -> None:
        with self._lock:
            tokens = list(self._labs)
        for token in tokens:
            self.stop(token)
