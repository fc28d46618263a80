"""Play a loaded scenario against real machines, one step at a time.

``Player(scenario).run()`` builds and starts every machine, runs the steps in order and stops
at the first failed expectation; each finished step is handed to ``on_step`` as a
:class:`StepReport` (the CLI prints them, tests assert on them). Only public APIs are used:
``Machine`` (start, save/load, system_reset, snapshot, bus), ``monitor.hmp.run_hmp``, the QMP
command table and ``monitor.commands`` (requested size, guest workload).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control import (
    Alloc,
    BalloonRogue,
    ControlError,
    Dump,
    Free,
    GuestOp,
    MachineControl,
    Pressure,
    Read,
    RogueWrite,
    Touch,
    Verify,
    control_for,
)
from control.settle import balloon_settled
from control.sizes import format_mib
from emulator.events import Record
from emulator.machine import Machine
from emulator.snapshot import BalloonSnapshot, DeviceSnapshot, MachineSnapshot
from monitor.commands import context_for
from scenarios.loader import Compare, MachineSpec, Scenario, Step
from scenarios.patterns import Pattern
from scenarios.predictions import measure

POLL_S = 0.02


class StepFailed(Exception):
    """An expectation did not hold (or a command failed); the message says what and why."""


@dataclass
class StepReport:
    index: int
    kind: str
    machine: str
    line: int
    title: str  # what the step asked for
    ok: bool
    summary: str = ""  # what happened, one line
    output: str = ""  # command output worth showing
    elapsed: float = 0.0


@dataclass
class _Tracked:
    """What the player remembers about one machine between steps."""

    machine: Machine
    spec: MachineSpec
    counts: Counter[str] = field(default_factory=Counter)
    window: Counter[str] = field(default_factory=Counter)  # counts at the last expect step
    allocs: dict[str, int] = field(default_factory=dict)
    unsubscribe: Callable[[], None] | None = None

    @property
    def control(self) -> MachineControl:
        return control_for(self.machine)


class Player:
    """Runs one scenario; see the module docstring."""

    def __init__(self, scenario: Scenario, *, recorder: Any = None, interactive: bool = False,
                 on_step: Callable[[StepReport], None] | None = None,
                 prompt: Callable[[str], str] = input) -> None:
        self.scenario = scenario
        self.recorder = recorder
        self.interactive = interactive
        self.on_step = on_step
        self.prompt = prompt
        self.machines: dict[str, _Tracked] = {}
        self.reports: list[StepReport] = []
        self._goals: dict[int, list[str]] = {}  # goal index -> what did not hold ([] reached)
        #: goal index -> what its prediction's measure showed when the goal was first reached
        self.measured: dict[int, int | None] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- machines

    def _attach(self, name: str, machine: Machine, spec: MachineSpec) -> _Tracked:
        old = self.machines.get(name)
        tracked = _Tracked(machine, spec)
        if old is not None:  # a migrated machine keeps its history
            tracked.counts, tracked.window = old.counts, old.window
            tracked.allocs = old.allocs

        def on_record(record: Record) -> None:
            with self._lock:
                tracked.counts[record.event.kind] += 1

        tracked.unsubscribe = machine.bus.subscribe(on_record)
        self.machines[name] = tracked
        if self.recorder is not None:
            self.recorder.attach(name, machine)
        return tracked

    def _start(self) -> None:
        from monitor.commands import context_for

        for name, spec in self.scenario.machines.items():
            machine = Machine(spec.config)
            if spec.pace_ms or spec.pause_after_reset:  # the machine fields: from the start
                machine.set_pace(spec.pace_ms, pause_after_reset=spec.pause_after_reset)
            context_for(machine).quit_handler = lambda: None
            control_for(machine)  # its settle watch sees the machine from the first event
            self._attach(name, machine, spec)
            machine.start()

    def close(self) -> None:
        from monitor.commands import context_for

        for name, tracked in list(self.machines.items()):
            if tracked.unsubscribe is not None:
                tracked.unsubscribe()
            if self.recorder is not None:
                self.recorder.detach(name)
            context_for(tracked.machine).close()
            tracked.control.close()
        self.machines.clear()

    # ---------------------------------------------------------------- running

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    def run(self) -> bool:
        """Play every step; stop at the first failure. Returns True if all passed."""
        try:
            if self.recorder is not None:
                self.recorder.start(self.scenario)
            self._start()
            return all(self._run_step(step) for step in self.scenario.steps) and \
                self._check_goals()
        finally:
            if self.recorder is not None:
                self.recorder.tick(force_keyframe=True)
            self.close()
            if self.recorder is not None:
                self.recorder.finish(self.ok)

    def _watch_goals(self) -> None:
        """Lessons: goals are reached once they held after some step (they latch)."""
        if not self.scenario.goals:
            return
        tracked = self.machines.get(self.scenario.default_machine)
        if tracked is None:
            return
        snap = None
        for i, goal in enumerate(self.scenario.goals):
            if self._goals.get(i) == []:
                continue
            if snap is None:
                snap = tracked.machine.snapshot(residency=lesson_residency(self.scenario))
            with self._lock:
                counts = Counter(tracked.counts)
            self._goals[i] = evaluate(snap, goal.condition, counts,
                                      list(tracked.machine.console),
                                      tracked.control.watch.settled,
                                      unsettled=tracked.control.unsettled)
            if not self._goals[i] and goal.predict is not None:
                self.measured[i] = measure(snap, goal.predict)

    def _check_goals(self) -> bool:
        """After the worked solution every goal must have been reached at some point."""
        ok = True
        for i, goal in enumerate(self.scenario.goals):
            why = self._goals.get(i, ["never checked"])
            summary = "reached" if not why else "; ".join(why)
            if not why and goal.predict is not None:
                summary += f" ({goal.predict.measure}: {self.measured.get(i)})"
            report = StepReport(len(self.scenario.steps) + i + 1, "goal",
                                self.scenario.default_machine, goal.line, goal.title,
                                not why, summary)
            self.reports.append(report)
            if self.recorder is not None:
                self.recorder.step(report, None)
            if self.on_step is not None:
                self.on_step(report)
            ok = ok and not why
        return ok

    def _run_step(self, step: Step) -> bool:
        report = StepReport(step.index, step.kind, step.machine, step.line, step.describe(),
                            True)
        t0 = time.monotonic()
        try:
            handler = getattr(self, "_do_" + step.kind.replace("-", "_"))
            handler(step, self.machines[step.machine], report)
        except StepFailed as err:
            report.ok, report.summary = False, str(err)
        except Exception as err:  # an engine error is a failed step, not a traceback
            report.ok, report.summary = False, f"{type(err).__name__}: {err}"
        report.elapsed = time.monotonic() - t0
        self.reports.append(report)
        if report.ok:
            self._watch_goals()
        if self.recorder is not None:
            self.recorder.step(report, step)
            self.recorder.tick()
        if self.on_step is not None:
            self.on_step(report)
        return report.ok

    # ---------------------------------------------------------------- step kinds

    def _do_say(self, step: Step, t: _Tracked, r: StepReport) -> None:
        r.summary = step.params["text"]

    def _do_pace(self, step: Step, t: _Tracked, r: StepReport) -> None:
        p = step.params
        pace = t.control.set_pace(p["ms"], pause_after_reset=p["pause_after_reset"])
        r.summary = (f"teaching pace (vmemlab): {pace.pace_ms} ms per request, pause after "
                     f"reset {'on' if pace.pause_after_reset else 'off'}")

    def _do_pause(self, step: Step, t: _Tracked, r: StepReport) -> None:
        if self.interactive:
            self.prompt(f"{step.params['text'] or 'paused'} -- press Enter to continue ")
            r.summary = "continued"
        else:
            r.summary = "headless: continuing"

    def _do_monitor(self, step: Step, t: _Tracked, r: StepReport) -> None:
        from monitor.hmp import run_hmp

        p = step.params
        out = run_hmp(t.machine, p["line"])
        r.output = out if p["show"] else ""
        if p["expect"] is not None:
            if not p["expect"].search(out):
                raise StepFailed(f"output does not match /{p['expect'].pattern}/:\n{out}")
        elif out.startswith("Error:"):
            raise StepFailed(out.strip())
        if p["expect_not"] is not None and p["expect_not"].search(out):
            raise StepFailed(f"output matches /{p['expect_not'].pattern}/:\n{out}")
        r.summary = "output as expected" if p["expect"] is not None else "done"

    def _do_qmp(self, step: Step, t: _Tracked, r: StepReport) -> None:
        import json

        from monitor.commands import MonitorError, context_for, describe_error
        from monitor.qmp import QMP_COMMANDS

        p = step.params
        ctx = context_for(t.machine)
        _spec, fn = QMP_COMMANDS[p["name"]]
        args = dict(p["args"])
        try:
            result = ctx.run(lambda: fn(ctx, args))
        except Exception as err:  # QMP turns every failure into an error response
            merr = err if isinstance(err, MonitorError) else describe_error(err)
            if p["expect_error"] is not None and p["expect_error"].search(merr.desc):
                r.summary = f"error as expected: {merr.desc}"
                return
            raise StepFailed(f"{{\"error\": {{\"class\": \"{merr.cls}\", "
                             f"\"desc\": \"{merr.desc}\"}}}}") from None
        if p["expect_error"] is not None:
            raise StepFailed(f"expected an error /{p['expect_error'].pattern}/, "
                             "the command succeeded")
        r.output = json.dumps({"return": result}, default=str)
        if p["has_expect"]:
            why = subset_mismatch(p["expect"], result)
            if why:
                raise StepFailed(f"return value: {why}")
            r.summary = "return value as expected"
        else:
            r.summary = "done"

    def _do_set_requested_size(self, step: Step, t: _Tracked, r: StepReport) -> None:
        p = step.params
        try:
            t.control.resize(p["device"], p["size"])
        except ControlError as err:
            raise StepFailed(err.message) from None
        r.summary = f"{p['device']}: requested-size = {format_mib(p['size'])}"

    def _guest_op(self, step: Step, t: _Tracked) -> GuestOp:
        """The step's parameters (checked by the loader) as a typed guest operation."""
        p = step.params
        action = p["action"]
        if action == "alloc":
            target = p["target"]
            return Alloc(p["size"], unmovable=p["unmovable"],
                         target=None if target == "any" else target, huge=p.get("huge", False))
        if action in ("free", "touch", "verify"):
            ref = p.get("alloc", 0)
            ident = t.allocs.get(ref) if isinstance(ref, str) else ref
            if ident is None:
                raise StepFailed(f"allocation '{ref}' does not exist (did its alloc fail?)")
            if action == "free":
                return Free(ident)
            return Touch(ident) if action == "touch" else Verify(ident)
        if action == "dump":
            return Dump(p.get("device"), legacy=p.get("legacy", False))
        if action in ("rogue-write", "read"):
            addr = p.get("addr", 0) or 0
            if "offset" in p:
                addr = t.machine.devices[p["device"]].addr + p["offset"]
            return RogueWrite(addr, p.get("device")) if action == "rogue-write" else Read(addr)
        if action == "balloon-rogue":
            return BalloonRogue(int(p["pages"]))
        if action == "pressure":
            return Pressure(p["size"])
        raise StepFailed(f"unknown guest action '{action}'")

    def _do_guest(self, step: Step, t: _Tracked, r: StepReport) -> None:
        p = step.params
        op = self._guest_op(step, t)
        try:
            outcome = t.control.guest(op, timeout=p["timeout"])
        except ControlError as err:
            if p["expect_error"] is not None and p["expect_error"].search(err.message):
                r.summary = f"failed as expected: {err.message}"
                return
            raise StepFailed(err.message) from None
        result = outcome.to_dict()
        if p["expect_error"] is not None:
            raise StepFailed(f"expected a failure /{p['expect_error'].pattern}/, got {result}")
        if isinstance(op, Alloc) and "as" in p:
            t.allocs[p["as"]] = int(outcome.values["id"])
        r.summary = ", ".join(f"{k}={v}" for k, v in outcome.values.items())
        if p["expect"] is not None:
            why = subset_mismatch(p["expect"], result)
            if why:
                raise StepFailed(f"guest {op.name}: {why} (result: {r.summary})")

    def _do_reboot(self, step: Step, t: _Tracked, r: StepReport) -> None:
        p = step.params
        try:
            if p["by"] == "guest":
                t.control.reboot(by_guest=True)
                r.summary = "the guest rebooted itself (PSCI SYSTEM_RESET)"
                return
            before = t.machine.config.cmdline
            cmdline = t.control.reboot(driver=p["driver"], driver_name=p["driver_name"],
                                       balloon_driver=p.get("balloon_driver"))
        except ControlError as err:
            raise StepFailed(err.message) from None
        r.summary = "system_reset" + (f"; guest command line: '{cmdline}'"
                                      if p["driver"] is not None or cmdline != before else "")

    def _do_balloon(self, step: Step, t: _Tracked, r: StepReport) -> None:
        p = step.params
        done = []
        try:
            if "target" in p:
                t.control.balloon.set_target(p["target"])
                done.append(f"target {format_mib(p['target'])}")
            if "poll_interval" in p:
                t.control.balloon.set_poll_interval(p["poll_interval"])
                done.append(f"stats every {p['poll_interval']} s" if p["poll_interval"]
                            else "stats polling off")
        except ControlError as err:
            raise StepFailed(err.message) from None
        r.summary = "balloon: " + ", ".join(done)

    def _do_migrate(self, step: Step, t: _Tracked, r: StepReport) -> None:
        source = t.machine
        dest_spec: MachineSpec = step.params["destination"] or t.spec
        t0 = time.monotonic()
        expect_error = step.params.get("expect_error")
        try:
            dest = t.control.migrate(dest_spec.config)
        except ControlError as err:
            if expect_error is not None and expect_error.search(err.message):
                r.summary = f"failed as expected: {err.message}; the source goes on"
                return
            raise StepFailed(err.message) from None
        if expect_error is not None:
            dest.close()
            raise StepFailed(f"expected the migration to fail /{expect_error.pattern}/, "
                             "it succeeded")
        sent = source.last_migration_bytes
        context_for(dest).quit_handler = lambda: None
        if t.unsubscribe is not None:
            t.unsubscribe()
        if self.recorder is not None:
            self.recorder.detach(step.machine)
        self._attach(step.machine, dest, t.spec)
        context_for(source).close()
        t.control.close()
        r.summary = (f"sent {format_mib(sent)} in {time.monotonic() - t0:.2f} s; the "
                     f"destination is {dest.runstate}")

    def _do_wait_until(self, step: Step, t: _Tracked, r: StepReport) -> None:
        cond = step.params["condition"]
        deadline = time.monotonic() + step.params["timeout"]
        while True:
            tracked = self.machines[step.machine]  # (a migrate replaces it)
            seq = tracked.machine.bus.last_seq
            why = self.check(tracked, cond)
            if not why:
                break
            if time.monotonic() >= deadline:
                raise StepFailed(f"timed out after {step.params['timeout']:g} s: "
                                 + "; ".join(why))
            if self.recorder is not None:
                self.recorder.tick()
            tracked.machine.bus.wait(seq, POLL_S * 5)
            time.sleep(POLL_S)
        r.summary = "reached"

    def _do_expect(self, step: Step, t: _Tracked, r: StepReport) -> None:
        why = self.check(t, step.params["condition"])
        with self._lock:
            t.window = Counter(t.counts)
        if why:
            raise StepFailed("; ".join(why))
        r.summary = "holds"

    # ---------------------------------------------------------------- conditions

    def check(self, t: _Tracked, cond: dict[str, Any]) -> list[str]:
        """What does not hold of ``cond`` right now (empty: all of it holds)."""
        snap: MachineSnapshot = t.machine.snapshot(residency=needs_residency(cond))
        with self._lock:
            window = t.counts - t.window
        return evaluate(snap, cond, window, list(t.machine.console), t.control.watch.settled,
                        unsettled=t.control.unsettled)


Unsettled = Callable[[MachineSnapshot, str | None], list[str]]


RESIDENCY_KEYS = ("resident", "unplugged-resident", "boot-resident")


def lesson_residency(scenario: Scenario) -> bool:
    """Whether checking ``scenario``'s goals (and predictions) needs host residency."""
    return any(needs_residency(g.condition) or (g.predict is not None and g.predict.residency)
               for g in scenario.goals)


def needs_residency(cond: dict[str, Any]) -> bool:
    """Whether ``cond`` needs a snapshot with host residency (``snapshot(residency=True)``):
    host residency (pagemap) is read only then."""
    balloon = cond.get("balloon") or {}
    return any(key in cond for key in RESIDENCY_KEYS) or "resident" in balloon


def evaluate(snap: MachineSnapshot, cond: dict[str, Any], window: Counter[str],
             console: list[str], settled: Callable[[DeviceSnapshot], bool], *,
             unsettled: Unsettled | None = None) -> list[str]:
    """What does not hold of a parsed condition (``Step.params["condition"]``, ``Goal``).

    ``window`` counts events by kind (for ``events``/``violations``), ``console`` holds recent
    guest console lines, ``settled(device_snapshot)`` decides ``settled`` (the machine's
    ``SettleWatch.settled``: control/settle.py); ``unsettled`` (``MachineControl.unsettled``),
    when given, decides it for the whole machine, the balloon included.
    """
    why: list[str] = []
    dev_id = cond.get("device")
    dev = snap.device(dev_id) if dev_id else None

    def num(key: str, actual: int, what: str) -> None:
        want: Compare | None = cond.get(key)
        if want is not None and not want.check(actual):
            why.append(f"{what} is {_fmt(actual, key)}, expected {want}")

    if dev is not None:
        num("plugged", dev.plugged_size, f"{dev.id} plugged size")
        num("requested", dev.requested_size, f"{dev.id} requested size")
        num("usable", dev.usable_region_size, f"{dev.id} usable region")
        num("plugged-blocks", dev.plugged_blocks, f"{dev.id} plugged blocks")
        if dev.resident is not None:
            num("resident", sum(dev.resident), f"{dev.id} host-resident memory")
            num("unplugged-resident", dev.unplugged_resident or 0,
                f"{dev.id} host memory resident in unplugged blocks")
        elif needs_residency(cond):
            why.append(f"{dev.id}: this snapshot has no host residency")
        if "driver" in cond and dev.driver_state != cond["driver"]:
            why.append(f"{dev.id} driver is {dev.driver_state}, expected {cond['driver']}")
        if "unplugged-inaccessible" in cond and \
                dev.unplugged_inaccessible != cond["unplugged-inaccessible"]:
            why.append(f"{dev.id} unplugged-inaccessible is {dev.unplugged_inaccessible}")
    if "settled" in cond:
        if unsettled is not None:
            pending = unsettled(snap, dev.id if dev is not None else None)
        else:
            devices = [dev] if dev is not None else list(snap.devices)
            pending = [d.id for d in devices if not settled(d)]
        if bool(cond["settled"]) == bool(pending):
            why.append(f"not settled: {', '.join(pending)}" if pending else "settled")
    if "balloon" in cond:
        _balloon_checks(snap, cond["balloon"], why, unsettled)
    if "boot-resident" in cond and snap.boot_resident is not None:
        want: Compare = cond["boot-resident"]
        if not want.check(snap.boot_resident):
            why.append(f"boot RAM resident on the host is {_fmt(snap.boot_resident, 'resident')}"
                       f", expected {want}")
    if "runstate" in cond and snap.runstate != cond["runstate"]:
        why.append(f"runstate is {snap.runstate}, expected {cond['runstate']}")
    if "booted" in cond and snap.guest_booted != cond["booted"]:
        why.append(f"guest booted is {snap.guest_booted}")
    if "node" in cond:
        node = next((n for n in snap.nodes if n.node_id == cond["node"]), None)
        if node is None:
            why.append(f"no node {cond['node']}")
        else:
            num("node-size", node.boot_ram + node.plugged, f"node {node.node_id} size")
            num("node-plugged", node.plugged, f"node {node.node_id} plugged")
    num("guest-faults", snap.guest_faults, "guest faults")
    num("dimms", len(snap.dimms), "pc-dimms plugged")
    if "model-balloon" in cond:
        pvb = snap.guest.pv_balloon if snap.guest is not None else None
        state = pvb.state if pvb is not None else "absent"
        host = snap.pv_balloon
        if state == "idle" and pvb is not None and host is not None and \
                pvb.target != host["target"]:
            state = "working"  # idle, but not yet at the host's latest target
        if state != cond["model-balloon"]:
            why.append(f"the model's balloon is {state}, expected {cond['model-balloon']}")
    num("violations", window["violation"], "violations since the last expect")
    for kind, want in (cond.get("events") or {}).items():
        if want is not None and not want.check(window[kind]):
            why.append(f"{kind} events since the last expect: {window[kind]}, "
                       f"expected {want}")
    pattern: Pattern | None = cond.get("console")
    if pattern is not None and not pattern.search_lines(console):
        why.append(f"no console line matches /{pattern.pattern}/")
    return why


def _balloon_checks(snap: MachineSnapshot, cond: dict[str, Any], why: list[str],
                    unsettled: Unsettled | None) -> None:
    b: BalloonSnapshot | None = snap.balloon
    if b is None:
        why.append("the machine has no balloon")
        return
    g = b.guest if b.guest is not None and b.guest.state != "disabled" else None
    dev_ids = [d.id for d in snap.devices]
    sizes: dict[str, tuple[int | None, str]] = {
        "actual": (b.guest_size, "balloon actual (the guest's size)"),
        "target": (b.target_size, "balloon target"),
        "resident": (None if b.host_inflated_resident is None else
                     b.host_inflated_resident * 4096, "inflated memory backed again"),
        "in-boot": (None if g is None else g.pages_boot * 4096, "balloon memory in boot RAM"),
        "oom-deflated": (None if g is None else g.oom_deflated * 4096,
                         "memory taken back on OOM"),
        "reported": (b.reported_bytes, "free memory reported"),
        "memtotal": (None if g is None else g.total_pages * 4096, "guest MemTotal"),
    }
    for key, (actual, what) in sizes.items():
        want: Compare | None = cond.get(key)
        if want is None:
            continue
        if actual is None:
            why.append(f"{what}: not known yet (the balloon driver has not bound)")
        elif not want.check(actual):
            why.append(f"{what} is {_fmt(actual, 'resident')}, expected {want}")
    pages: Compare | None = cond.get("pages")
    if pages is not None and not pages.check(b.actual):
        why.append(f"balloon pages: {b.actual}, expected {pages}")
    for dev_id, want in (cond.get("in") or {}).items():
        index = dev_ids.index(dev_id) if dev_id in dev_ids else -1
        if g is None or not 0 <= index < len(g.pages_dev):
            why.append(f"balloon memory in {dev_id}: not known yet")
        elif not want.check(g.pages_dev[index] * 4096):
            why.append(f"balloon memory in {dev_id} is "
                       f"{_fmt(g.pages_dev[index] * 4096, 'resident')}, expected {want}")
    if "driver" in cond and b.driver_state != cond["driver"]:
        why.append(f"balloon driver is {b.driver_state}, expected {cond['driver']}")
    if "settled" in cond:
        done = (not unsettled(snap, b.id)) if unsettled is not None else balloon_settled(b)
        if bool(cond["settled"]) != done:
            why.append("balloon not settled" if not done else "balloon settled")


def _fmt(value: int, key: str) -> str:
    if key in ("plugged", "requested", "usable", "resident", "unplugged-resident", "node-size",
               "node-plugged"):
        return f"{format_mib(value)} ({value})"
    return str(value)


def subset_mismatch(expected: Any, actual: Any, path: str = "") -> str:
    """Why ``expected`` is not contained in ``actual`` ("" if it is).

    Mappings: every expected key must be there and match; lists: element-wise, the actual list
    may be longer; a string expected against a number is a size/comparison (``1G``, ``>= 1``).
    """
    where = path or "value"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where} is {actual!r}, expected a mapping"
        for key, want in expected.items():
            if key not in actual:
                return f"{path + '.' if path else ''}{key} is missing"
            why = subset_mismatch(want, actual[key], f"{path + '.' if path else ''}{key}")
            if why:
                return why
        return ""
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return f"{where} is {actual!r}, expected at least {len(expected)} items"
        for i, want in enumerate(expected):
            why = subset_mismatch(want, actual[i], f"{path}[{i}]")
            if why:
                return why
        return ""
    if isinstance(expected, str) and isinstance(actual, int) and not isinstance(actual, bool):
        from control.sizes import SizeError, strtosz
        from scenarios.loader import split_compare

        parts = split_compare(expected)
        try:
            want = Compare(parts[0], strtosz(parts[1]), expected) if parts else None
        except SizeError:
            want = None
        if want is None:
            return f"{where} is {actual}, expected {expected!r}"
        return "" if want.check(actual) else f"{where} is {actual}, expected {expected}"
    if expected != actual or isinstance(expected, bool) != isinstance(actual, bool):
        return f"{where} is {actual!r}, expected {expected!r}"
    return ""
