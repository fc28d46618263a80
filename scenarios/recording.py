"""Recordings: an append-only NDJSON log of a played scenario, and a reader that can seek.

Line 1 is the header::

    {"type": "header", "format": "vmemlab-recording", "version": 1, "title": ...,
     "summary": ..., "scenario": PATH, "created": WALL, "machines": {NAME: {"argv": [...] | null,
     "config": {...MachineConfig...}}}}

then one JSON object per line, each with ``t`` (seconds since the recording started) and
``type``:

* ``event``: ``{"machine": NAME, "event": Record.to_dict()}`` -- every record of the machine's
  event bus (``seq``, ``time_ns``, ``wall``, ``kind`` and the event's fields);
* ``step``: a finished step (``index``, ``kind``, ``machine``, ``line``, ``title``, ``ok``,
  ``summary``, ``output``);
* ``say``: narration (``text``, ``index``) -- a marker a player shows on its timeline;
* ``marker``: ``{"marker": "violation", "machine", "addr", "access", "device"}`` for every
  refused guest access, and ``attach``/``detach`` when a machine appears or goes (migration);
* ``keyframe``: ``{"machine": NAME, "state": STATE}`` -- the machine's state (the JSON form
  of its snapshot, :func:`emulator.snapshot.machine_state`), written when a machine is
  attached, every ``keyframe_events`` events or ``keyframe_seconds`` seconds, and at the end;
* ``end``: ``{"ok": bool}``.

A *live* recording (:meth:`Recorder.start_live`: the browser sandbox records every session's
machine) has the same header with ``"scenario": null`` and no ``step``/``say`` lines. A
recorder given ``max_bytes`` stops at that size: its last line is then
``{"type": "marker", "marker": "truncated", "bytes": N}`` and nothing more is written.

A player seeks to time ``t`` with :meth:`Recording.state_at`: the nearest keyframe at or
before ``t`` per machine, then the events after it replayed onto that state.
"""

from __future__ import annotations

import json
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict
from typing import IO, TYPE_CHECKING, Any

from emulator.events import Record
from emulator.snapshot import machine_state
from scenarios.recording_format import FormatError, check_entry, check_header, decode_line
from scenarios.textfile import TextFileError, read_text

if TYPE_CHECKING:
    from emulator.config import MachineConfig
    from emulator.machine import Machine
    from emulator.snapshot import MachineSnapshot
    from scenarios.loader import Scenario, Step
    from scenarios.runner import StepReport

FORMAT = "vmemlab-recording"
VERSION = 1
MAX_FILE_BYTES = 64 << 20  # Recording.load: twice the web's live-recording cap


class Recorder:
    """Writes a recording while a :class:`scenarios.runner.Player` plays.

    Bus records are queued by a subscriber on the vCPU thread (cheap) and written by
    :meth:`tick` on the player's thread, which also takes keyframes when they are due.
    """

    #: room kept for the final ``truncated`` marker under ``max_bytes``
    TRUNCATE_RESERVE = 128

    def __init__(self, stream: IO[str], *, keyframe_events: int = 500,
                 keyframe_seconds: float = 2.0, max_bytes: int | None = None) -> None:
        self.stream = stream
        self.max_bytes = max_bytes
        self.bytes_written = 0
        self.truncated = False
        self.keyframe_events = keyframe_events
        self.keyframe_seconds = keyframe_seconds
        self._t0 = time.time()
        self._queue: deque[tuple[str, Record]] = deque()
        self._lock = threading.Lock()
        self._machines: dict[str, Machine] = {}
        self._unsubscribe: dict[str, Any] = {}
        self._since_keyframe: dict[str, int] = {}
        self._last_keyframe: dict[str, float] = {}
        self.lines = 0
        self._last_t = 0.0

    def _write(self, obj: dict[str, Any]) -> None:
        if self.truncated:
            return
        line = json.dumps(obj, separators=(",", ":"), default=str) + "\n"  # ASCII only
        if (self.max_bytes is not None
                and self.bytes_written + len(line) + self.TRUNCATE_RESERVE > self.max_bytes):
            self._truncate()
            return
        self.stream.write(line)
        self.bytes_written += len(line)
        self.lines += 1

    def _truncate(self) -> None:
        """The size cap is reached: a last marker, then stop listening and writing."""
        line = json.dumps({"t": self._last_t, "type": "marker", "marker": "truncated",
                           "bytes": self.bytes_written}, separators=(",", ":")) + "\n"
        self.stream.write(line)
        self.bytes_written += len(line)
        self.lines += 1
        self.truncated = True
        for unsubscribe in self._unsubscribe.values():
            unsubscribe()
        self._unsubscribe.clear()
        self._machines.clear()
        self._queue.clear()
        self.stream.flush()

    def _now(self) -> float:
        return self._stamp(time.time() - self._t0)

    def _stamp(self, t: float) -> float:
        """Times in the file never go backwards: file order is the order of replay."""
        self._last_t = max(self._last_t, round(max(0.0, t), 6))
        return self._last_t

    def start(self, scenario: Scenario) -> None:
        self._t0 = time.time()
        self._write({
            "type": "header", "format": FORMAT, "version": VERSION, "title": scenario.title,
            "summary": scenario.summary, "scenario": scenario.path, "created": self._t0,
            "machines": {name: {"argv": spec.argv, "config": asdict(spec.config)}
                         for name, spec in scenario.machines.items()},
        })

    def start_live(self, title: str, machines: dict[str, MachineConfig],
                   summary: str = "") -> None:
        """The header of a recording with no scenario behind it (a live sandbox session)."""
        self._t0 = time.time()
        self._write({
            "type": "header", "format": FORMAT, "version": VERSION, "title": title,
            "summary": summary, "scenario": None, "created": self._t0,
            "machines": {name: {"argv": None, "config": asdict(config)}
                         for name, config in machines.items()},
        })

    def close(self) -> None:
        """Stop listening to every machine (nothing more is written; the stream stays open)."""
        for unsubscribe in self._unsubscribe.values():
            unsubscribe()
        self._unsubscribe.clear()
        self._machines.clear()
        self._queue.clear()

    def attach(self, name: str, machine: Machine) -> None:
        if self.truncated:
            return
        self.tick()
        self._machines[name] = machine

        def on_record(record: Record) -> None:
            self._queue.append((name, record))  # deque.append is atomic

        self._unsubscribe[name] = machine.bus.subscribe(on_record)
        self._write({"t": self._now(), "type": "marker", "marker": "attach", "machine": name})
        self._keyframe(name)

    def detach(self, name: str) -> None:
        unsubscribe = self._unsubscribe.pop(name, None)
        if unsubscribe is None:
            return
        self.tick(force_keyframe=True, only=name)
        unsubscribe()
        self._flush()
        self._machines.pop(name, None)
        self._write({"t": self._now(), "type": "marker", "marker": "detach", "machine": name})

    def _flush(self, upto: tuple[str, int] | None = None) -> None:
        """Write queued records; with ``upto=(machine, seq)`` that machine's later ones stay."""
        held: list[tuple[str, Record]] = []
        for _ in range(len(self._queue)):  # only what is queued now: the vCPU keeps adding
            if self.truncated:
                self._queue.clear()
                return
            name, record = self._queue.popleft()
            if upto is not None and name == upto[0] and record.seq > upto[1]:
                held.append((name, record))
                continue
            t = self._stamp(record.wall - self._t0)
            self._write({"t": t, "type": "event", "machine": name, "event": record.to_dict()})
            self._since_keyframe[name] = self._since_keyframe.get(name, 0) + 1
            event = record.event
            if event.kind == "violation":
                self._write({"t": t, "type": "marker", "marker": "violation", "machine": name,
                             "device": getattr(event, "device", None),
                             "addr": getattr(event, "addr", 0),
                             "access": getattr(event, "access", "")})
        self._queue.extendleft(reversed(held))

    def _keyframe(self, name: str) -> None:
        machine = self._machines.get(name)
        if machine is None or self.truncated:
            return
        t = self._now()
        try:
            snap = machine.snapshot()
        except Exception:  # a closed or stuck machine: no keyframe, the events still count
            return
        self._flush(upto=(name, snap.seq))  # exactly the events the snapshot includes
        self._write({"t": self._stamp(t), "type": "keyframe", "machine": name,
                     "state": with_held(snap, machine_state(snap))})
        self._since_keyframe[name] = 0
        self._last_keyframe[name] = time.monotonic()

    def tick(self, force_keyframe: bool = False, only: str | None = None) -> None:
        """Write queued events; take keyframes that are due (or all, if forced)."""
        if self.truncated:
            self._queue.clear()
            return
        self._flush()
        now = time.monotonic()
        for name in list(self._machines):
            if only is not None and name != only:
                continue
            due = (self._since_keyframe.get(name, 0) >= self.keyframe_events
                   or (self._since_keyframe.get(name, 0) and
                       now - self._last_keyframe.get(name, 0) >= self.keyframe_seconds))
            if force_keyframe or due:
                self._keyframe(name)

    def step(self, report: StepReport, step: Step | None) -> None:
        self._flush()
        t = self._now()
        if step is not None and step.kind == "say":
            self._write({"t": t, "type": "say", "index": step.index, "machine": step.machine,
                         "text": step.params["text"]})
        self._write({"t": t, "type": "step", "index": report.index, "kind": report.kind,
                     "machine": report.machine, "line": report.line, "title": report.title,
                     "ok": report.ok, "summary": report.summary, "output": report.output,
                     "elapsed": round(report.elapsed, 6)})
        if report.kind == "guest":  # what the guest holds changed: the replay's colours
            self.tick(force_keyframe=True, only=report.machine)

    def finish(self, ok: bool) -> None:
        self._flush()
        self._write({"t": self._now(), "type": "end", "ok": ok})
        self.stream.flush()


# ------------------------------------------------------------------------------ reading

class RecordingError(ValueError):
    """Not a recording this reader understands (with the line number)."""


def with_held(snap: MachineSnapshot, state: Any) -> Any:
    """A keyframe ``state`` with each device's ``held``: per block, hex, what the guest keeps
    in it (00 nothing, 01 movable data, 02 unmovable data), so a replay draws plugged blocks
    in the live page's colours. Before the guest has booted it holds nothing; left out when a
    running guest exports no usage table for the device."""
    guest = snap.guest
    for i, dev in enumerate(snap.devices):
        if dev.id not in state["devices"]:
            continue
        if guest is None:
            state["devices"][dev.id]["held"] = bytes(dev.nb_blocks).hex()
            continue
        view = guest.devices[i] if i < len(guest.devices) else None
        usage = view.usage if view is not None else ()
        if len(usage) == dev.nb_blocks:
            state["devices"][dev.id]["held"] = bytes(
                2 if unmovable else 1 if movable else 0
                for movable, unmovable, _free, _state in usage).hex()
    return state


def _clear_held(dev: dict[str, Any], first: int, count: int | None) -> None:
    if "held" not in dev:
        return
    held = bytearray.fromhex(dev["held"])
    end = len(held) if count is None else min(len(held), first + count)
    held[first:end] = bytes(max(0, end - first))
    dev["held"] = held.hex()


def apply_event(state: dict[str, Any], event: dict[str, Any]) -> None:
    """Replay one recorded bus event onto a keyframe ``state`` (in place)."""
    kind = event.get("kind")
    state["seq"] = event.get("seq", state.get("seq", 0))
    devices = state.get("devices", {})
    dev = devices.get(event.get("device")) if isinstance(event.get("device"), str) else None
    if kind == "block_state" and dev is not None:
        bitmap = bytearray.fromhex(dev["bitmap"])
        first = min(int(event["first_block"]), len(bitmap))
        count = max(0, min(int(event["count"]), len(bitmap) - first))  # never resizes it
        bitmap[first:first + count] = (b"\x01" if event["plugged"] else b"\x00") * count
        dev["bitmap"] = bitmap.hex()
        if not event["plugged"]:  # an unplugged block holds nothing
            _clear_held(dev, first, count)
    elif kind == "config_change" and dev is not None:
        for key, value in (event.get("fields") or {}).items():
            if key in ("plugged_size", "requested_size", "usable_region_size"):
                dev[key] = value
        if "plugged_size" in (event.get("fields") or {}):
            node = next((n for n in state.get("nodes", []) if n["node_id"] == dev["node"]),
                        None)
            if node is not None:
                node["plugged"] = sum(d["plugged_size"] for d in devices.values()
                                      if d["node"] == dev["node"])
    elif kind == "guest_status":
        if dev is not None:
            dev["driver_state"] = event["status"]
        elif event.get("status") == "booted":
            state["guest_booted"] = True
        elif event.get("status") == "fault":
            state["guest_faults"] = state.get("guest_faults", 0) + 1
    elif kind == "runstate":
        state["runstate"] = event["state"]
    elif kind == "reset":
        state["cmdline"] = event.get("cmdline", state.get("cmdline", ""))
        state["guest_booted"] = False
        for d in devices.values():
            d["driver_state"] = "absent"
            _clear_held(d, 0, None)


class Recording:
    """A loaded recording: ``header``, ``entries`` (every line after it), seek helpers."""

    def __init__(self, header: dict[str, Any], entries: list[dict[str, Any]]) -> None:
        self.header = header
        self.entries = entries
        self._times: list[float] = []
        last = 0.0
        for e in entries:
            last = max(last, float(e.get("t", 0.0)))  # checked: a finite number
            self._times.append(last)

    @classmethod
    def load(cls, path: str) -> Recording:
        """Read a recording file (a regular file of at most MAX_FILE_BYTES, UTF-8)."""
        try:
            text = read_text(path, MAX_FILE_BYTES)
        except TextFileError as err:
            where = f"line {err.line}: " if err.line else ""
            raise RecordingError(f"{where}{err.message}") from None
        return cls.parse(text.splitlines())

    @classmethod
    def parse(cls, lines: Iterable[str]) -> Recording:
        """Check every line (see ``scenarios.recording_format``); RecordingError says where."""
        header: dict[str, Any] | None = None
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = decode_line(line)
                if header is None:
                    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                        raise RecordingError(f"line {number}: not a {FORMAT} file")
                    if obj.get("version") != VERSION:
                        version = obj.get("version")
                        shown = version if isinstance(version, (int, float)) else "?"
                        raise RecordingError(f"line {number}: version {shown} "
                                             f"(this reader knows {VERSION})")
                    header = check_header(obj)
                    continue
                entries.append(check_entry(obj))
            except FormatError as err:
                raise RecordingError(f"line {number}: {err}") from None
        if header is None:
            raise RecordingError("empty recording")
        return cls(header, entries)  # file order is replay order (times never go backwards)

    @property
    def title(self) -> str:
        return str(self.header.get("title", ""))

    @property
    def duration(self) -> float:
        return self._times[-1] if self._times else 0.0

    def markers(self) -> list[dict[str, Any]]:
        """Timeline markers: narration and violations."""
        return [e for e in self.entries if e.get("type") == "say" or
                (e.get("type") == "marker" and e.get("marker") == "violation")]

    def steps(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("type") == "step"]

    def events(self, machine: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("type") == "event" and
                (machine is None or e.get("machine") == machine)]

    def state_at(self, t: float) -> dict[str, dict[str, Any]]:
        """Every machine's state at time ``t``: nearest keyframe, then replayed events.

        A machine that was detached (migrated away) before ``t`` is left out; its successor
        under the same name has its own keyframe from when it was attached.
        """
        end = bisect_right(self._times, t)
        states: dict[str, dict[str, Any]] = {}
        start_of: dict[str, int] = {}
        # scan back to the nearest keyframe of each machine
        for i in range(end - 1, -1, -1):
            e = self.entries[i]
            if e.get("type") == "keyframe" and e["machine"] not in start_of:
                start_of[e["machine"]] = i
        for name, i in start_of.items():
            state = json.loads(json.dumps(self.entries[i]["state"]))
            for e in self.entries[i + 1:end]:
                if e.get("machine") != name:
                    continue
                if e.get("type") == "event":
                    apply_event(state, e["event"])
                elif e.get("type") == "keyframe":
                    state = json.loads(json.dumps(e["state"]))
            states[name] = state
        return states
