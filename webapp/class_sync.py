"""Each server process's side of a class: publish its students' machines, apply the
teacher's commands to them.

A background task wakes every ``class_interval`` seconds (1 s by default) and, for every
session of this process whose browser joined a class (``webapp.classes``):

* applies the class's new commands through the control layer (``MachineControl.pause`` /
  ``resume``; a pushed lesson or scenario replaces the machine through the session manager,
  as ``POST /lessons/NAME/start`` does) and tells the student's page (``class_notice``);
* publishes what the teacher's page draws: the machine's state, block codes reduced to a
  thumbnail (from the snapshot the pump already took: no extra snapshot), the memory
  budget and the pushed lesson's goals (checked every ``GOAL_INTERVAL``, reached goals
  latched as the lesson page does).

The teacher's page reads the publications from the shared store, so a teacher on one
process sees the students of every process. The cost is bounded: one small JSON document
per student per interval, no snapshot of its own except for goals, and the block codes
recomputed only when the pump took a new snapshot (an idle class costs almost nothing).
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from control import ControlError, control_for
from emulator.snapshot import MachineSnapshot
from scenarios.loader import Scenario, ScenarioError, bundled, lessons, load_scenario
from scenarios.runner import evaluate, needs_residency
from webapp.classes import ClassRegistry, Command, Membership
from webapp.scenario_machines import check_fits, start_scenario_machine
from webapp.sessions import LimitError, MachineSession, SessionManager, StartTask

log = logging.getLogger(__name__)

THUMB_CELLS = 256  # cells per device in a thumbnail (guest view)
DETAIL_CELLS = 1024  # cells per device in the teacher's read-only view (guest and host)
GOAL_INTERVAL = 2.0  # seconds between goal checks of one student
MEMBERSHIP_AGE = 5.0  # seconds a session's looked-up membership is trusted
PURGE_INTERVAL = 60.0  # seconds between sweeps of expired classes out of the store


@dataclass(frozen=True)
class Item:
    """Something a teacher can push: a bundled lesson or scenario."""

    kind: str  # "lesson" or "scenario"
    name: str
    scenario: Scenario

    @property
    def url(self) -> str:
        return f"/lessons/{self.name}" if self.kind == "lesson" else f"/class/scenarios/{self.name}"


@functools.cache
def catalogue() -> dict[str, Item]:
    """The bundled lessons and scenarios by ``kind:name`` (loaded once)."""
    out: dict[str, Item] = {}
    for kind, paths in (("lesson", lessons()), ("scenario", bundled())):
        for path in paths:
            name = os.path.basename(path).rsplit(".", 1)[0]
            try:
                out[f"{kind}:{name}"] = Item(kind, name, load_scenario(path))
            except ScenarioError:  # a broken bundled file is a test failure, not a crash
                continue
    return out


def reduce_codes(codes: bytes, cells: int) -> bytes:
    """At most ``cells`` codes: each cell the most common code of its run of blocks."""
    if len(codes) <= cells:
        return codes
    out = bytearray(cells)
    n = len(codes)
    for i in range(cells):
        chunk = codes[i * n // cells:(i + 1) * n // cells]
        out[i] = Counter(chunk).most_common(1)[0][0]
    return bytes(out)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Follow:
    """What this process remembers about one class student it serves."""

    membership: Membership
    checked: float  # when the membership was looked up
    applied: int  # the last command applied
    item: str | None = None  # the pushed lesson/scenario, "kind:name"
    reached: set[int] = field(default_factory=set)
    goals_t: float = 0.0
    generation: int = -1
    view_key: tuple[int, int, float] | None = None  # the snapshot view_part was made from
    view_part: dict[str, Any] = field(default_factory=dict)


class ClassSync:
    def __init__(self, registry: ClassRegistry, sessions: SessionManager, worker: str, *,
                 interval: float, start_task: StartTask) -> None:
        self.registry = registry
        self.sessions = sessions
        self.worker = worker
        self.interval = interval
        self._start_task = start_task
        self._follows: dict[str, Follow] = {}
        self._strangers: dict[str, float] = {}  # sessions in no class: when last looked up
        self._purged = 0.0
        self._stop = threading.Event()
        self._task: Any = None
        self._lock = threading.RLock()  # rounds, joins and pushes one at a time
        self.notify: Callable[[MachineSession, dict[str, Any]], None] = (
            lambda sess, data: sessions.emit("class_notice", data, sess.room))

    def start(self) -> None:
        with self._lock:
            if self._task is None or not self._task.is_alive():
                self._stop.clear()
                self._task = self._start_task(self._loop)

    def stop(self) -> None:
        self._stop.set()
        task = self._task
        if task is not None and task is not threading.current_thread():
            task.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick(time.monotonic())
            except Exception:  # the class view must never stop: log, go on
                log.exception("class sync failed")

    # ------------------------------------------------------------------ one round

    def joined(self, token: str, membership: Membership) -> None:
        """A session of this process just joined (or re-joined): commands from now on."""
        follow = Follow(membership, time.monotonic(),
                        self.registry.last_command(membership.code))
        info = self.registry.get(membership.code)
        follow.item = info.lesson if info else None
        with self._lock:
            self._follows[token] = follow
            self._strangers.pop(token, None)

    def tick(self, now: float) -> None:
        """One round (the task's, or a test's: rounds never overlap)."""
        with self._lock:
            self._tick(now)

    def _tick(self, now: float) -> None:
        if now - self._purged >= PURGE_INTERVAL:
            self._purged = now
            self.registry.purge_expired()
        sessions = {s.token: s for s in self.sessions.sessions()}
        for token in [t for t in self._follows if t not in sessions]:
            del self._follows[token]
        for token in [t for t in self._strangers if t not in sessions]:
            del self._strangers[token]
        for token, sess in sessions.items():
            follow = self._follow(token, now)
            if follow is None:
                continue
            for command in self.registry.commands_after(follow.membership.code,
                                                        follow.applied):
                self._apply(sess, follow, command)
                follow.applied = command.seq
            self.registry.publish(follow.membership, self.status(sess, follow, now))

    def _follow(self, token: str, now: float) -> Follow | None:
        follow = self._follows.get(token)
        if follow is not None and now - follow.checked < MEMBERSHIP_AGE:
            return follow
        if follow is None and now - self._strangers.get(token, -MEMBERSHIP_AGE) < MEMBERSHIP_AGE:
            return None  # in no class when last asked
        membership = self.registry.membership(token)
        if membership is None:
            self._follows.pop(token, None)
            self._strangers[token] = now
            return None
        self._strangers.pop(token, None)
        if follow is None or follow.membership != membership:
            # first seen here (another process's student came over, or a new join)
            follow = Follow(membership, now, self.registry.last_command(membership.code))
            info = self.registry.get(membership.code)
            follow.item = info.lesson if info else None
            self._follows[token] = follow
        follow.checked = now
        return follow

    # ------------------------------------------------------------------ commands

    def _apply(self, sess: MachineSession, follow: Follow, command: Command) -> None:
        try:
            if command.action in ("pause", "resume"):
                with sess.lock:
                    machine = sess.machine
                    if machine is None:
                        return
                    control = control_for(machine)
                    if command.action == "pause":
                        control.pause()
                    else:
                        control.resume()
                        sess.idle_paused = False
                self.notify(sess, {"kind": command.action, "text":
                                   "your teacher paused every machine" if command.action ==
                                   "pause" else "your teacher let every machine run again"})
            else:
                self._push(sess, follow, f"{command.action}:{command.target}")
        except (ControlError, LimitError) as err:
            self.notify(sess, {"kind": "error", "text": f"your teacher's {command.action} "
                                                        f"did not apply here: {err}"})
        except Exception:  # a bug: logged; the command counts as applied, the class goes on
            log.exception("class command %s failed for room %s", command.action, sess.room)
            self.notify(sess, {"kind": "error", "text": f"your teacher's {command.action} "
                                                        "did not apply here (internal error)"})

    def _push(self, sess: MachineSession, follow: Follow, key: str) -> None:
        item = self.start_item(sess.token, key)
        self.notify(sess, {"kind": item.kind, "url": item.url, "title": item.scenario.title,
                           "text": f"your teacher started the {item.kind} "
                                   f"“{item.scenario.title}”"})

    def start_item(self, token: str, key: str) -> Item:
        """Give session ``token`` a fresh machine built from lesson/scenario ``key``'s
        machine, within the server's limits (``LimitError`` otherwise)."""
        item = catalogue().get(key)
        if item is None:
            raise LimitError(f"no bundled lesson or scenario '{key}' on this server")
        check_fits(self.sessions, item.scenario, item.name)
        own = self.sessions.get(token)
        if own is not None:
            self.sessions.check_budget(own=own, replacing=True)
        start_scenario_machine(self.sessions, token, item.scenario)
        with self._lock:
            follow = self._follows.get(token)
            if follow is not None:
                follow.item, follow.reached, follow.goals_t = key, set(), 0.0
        return item

    # ------------------------------------------------------------------ publication

    def status(self, sess: MachineSession, follow: Follow, now: float) -> dict[str, Any]:
        """What the teacher's page shows of ``sess`` (JSON-ready)."""
        machine = sess.machine
        snap = sess.snapshot
        out: dict[str, Any] = {"worker": self.worker, "connected": bool(sess.clients),
                               "generation": sess.generation,
                               "runstate": machine.runstate if machine else "closed",
                               "budget": sess.budget(), "devices": [], "goals": None}
        if machine is None or snap is None:
            return out
        key = (snap.seq, sess.generation, sess.residency_t)
        if key != follow.view_key:  # the machine changed since: compute its picture again
            follow.view_key, follow.view_part = key, self._picture(sess, snap)
        out.update(follow.view_part)
        out["goals"] = self._goals(sess, follow, now)
        return out

    @staticmethod
    def _picture(sess: MachineSession, snap: MachineSnapshot) -> dict[str, Any]:
        """The part of a status that only a new snapshot changes."""
        view = sess.view(snap)
        devices = []
        for dev_id, dev in view["devices"].items():
            devices.append({
                "id": dev_id, "region_size": dev["region_size"],
                "requested_size": dev["requested_size"], "plugged_size": dev["plugged_size"],
                "driver_state": dev["driver_state"], "nb_blocks": dev["nb_blocks"],
                "thumb": _b64(reduce_codes(dev["guest"], THUMB_CELLS)),
                "guest": _b64(reduce_codes(dev["guest"], DETAIL_CELLS)),
                "host": _b64(reduce_codes(dev["host"], DETAIL_CELLS)),
            })
        return {"guest_booted": view["guest_booted"], "resident": view["resident"],
                "allocations": len(view["allocations"]), "devices": devices}

    def _goals(self, sess: MachineSession, follow: Follow, now: float
               ) -> dict[str, Any] | None:
        item = catalogue().get(follow.item or "")
        if item is None:
            return None
        goals = item.scenario.goals
        if follow.generation != sess.generation:
            follow.generation, follow.reached = sess.generation, set()
        if goals and now - follow.goals_t >= GOAL_INTERVAL and sess.machine is not None:
            follow.goals_t = now
            machine = sess.machine
            control = control_for(machine)
            residency = any(needs_residency(g.condition) for g in goals)
            try:
                snap = machine.snapshot(residency=residency)
            except Exception:  # closed meanwhile
                snap = None
            if snap is not None:
                counts = Counter(r.event.kind for r in machine.bus.since(0))
                console = list(machine.console)
                for i, goal in enumerate(goals):
                    if not evaluate(snap, goal.condition, counts, console,
                                    control.watch.settled, unsettled=control.unsettled):
                        follow.reached.add(i)
        return {"kind": item.kind, "name": item.name, "title": item.scenario.title,
                "url": item.url, "total": len(goals),
                "goals": [{"title": g.title, "reached": i in follow.reached}
                          for i, g in enumerate(goals)]}
