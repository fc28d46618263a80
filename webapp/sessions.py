"""One machine per browser session, bounded, paused when idle and reclaimed later.

A *session* is identified by a random token kept in the signed Flask session cookie; its
machine's events go to one Socket.IO room only that session's sockets join, so a browser can
never see or steer another browser's machine. One pump thread serves all sessions: it drains
each machine's event queue (filled by a tiny bus subscriber on the vCPU thread), sends the
events as one ``batch`` per tick (≤ ``emit_hz`` per room), sends a fresh ``view`` (block
codes, config space, chart sample) after changes, and ``keyframe``s to sockets that just joined.

Every session's machine is also *recorded* while it runs (``scenarios.recording``: the format
``vmemlab play --record`` writes) into a temporary file of at most
``Settings.max_recording_bytes``; the pump writes it, a new machine starts a new recording and
``GET /api/machine/recording`` downloads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any, BinaryIO, Protocol, cast

from control import ControlError, ErrorKind, control_for
from control.machine_control import engine_call
from emulator.config import GiB, MachineConfig, MemoryDeviceConfig, MiB, NumaNodeConfig
from emulator.events import Record
from emulator.machine import Machine, MachineError
from emulator.snapshot import MachineSnapshot
from scenarios.recording import Recorder
from webapp import view_model
from webapp.inputs import InputError, config_to_form
from webapp.registry import MachineRegistry
from webapp.settings import Settings

log = logging.getLogger(__name__)

Emit = Callable[[str, Any, str], None]

LOG_KINDS = frozenset({"request", "response", "config_change", "reset", "violation",
                       "guest_status", "runstate", "device_broken", "device_reset",
                       "guest_command", "migration", "zero_page_read", "unplugged_write",
                       "request_held", "pace"})
MAX_BATCH_EVENTS = 3000  # more than this in one tick: send a keyframe instead
IDLE_MEASURE_AGE = 30.0  # seconds between residency scans of a machine with no events


class LimitError(InputError):
    """The server is full (too many machines); HTTP ``status`` for the refusal."""

    status = 503


class BudgetError(LimitError):
    """The server's budget of resident guest memory is used up: nothing may grow."""

    status = 429


class MachineBudgetError(BudgetError):
    """One machine's budget of resident guest memory is used up: it may not grow further."""


class NoCookieError(InputError):
    """A request without the session cookie: it gets no machine (and evicts nobody)."""


NO_COOKIE = ("this request has no session cookie, and machines are made only for browser "
             "sessions: open / first (a script: GET /api/csrf-token) and send the cookie back")


def default_config() -> MachineConfig:
    """Boot RAM plus two NUMA nodes with one 1 GiB virtio-mem device each (512 blocks)."""
    return MachineConfig(
        boot_ram=256 * MiB,
        smp=2,
        nodes=[NumaNodeConfig(0, [0]), NumaNodeConfig(1, [1])],
        devices=[
            MemoryDeviceConfig(id="vm0", memdev="mem0", size=1 * GiB, node=0,
                               requested_size=256 * MiB),
            MemoryDeviceConfig(id="vm1", memdev="mem1", size=1 * GiB, node=1,
                               requested_size=128 * MiB),
        ],
    )


def new_token() -> str:
    return secrets.token_urlsafe(18)


class MachineSession:
    """A browser session's machine plus what its page needs to catch up (logs, chart data)."""

    def __init__(self, token: str, wake: Callable[[], None] = lambda: None, *,
                 max_recording_bytes: int = 32 * MiB, recording_dir: str | None = None,
                 admit: Callable[[MachineSession, int], None] | None = None,
                 budget: Callable[[MachineSession], dict[str, int]] | None = None) -> None:
        self.token = token
        self._admit = admit  # the server's say before this session's guest memory grows
        self._budget = budget  # the memory budgets' numbers, for the page
        self.max_recording_bytes = max_recording_bytes
        self.recording_dir = recording_dir
        self.recorder: Recorder | None = None
        self.recording_path: str | None = None
        self._recording_file: IO[str] | None = None
        self._wake = wake
        self.room = "m-" + secrets.token_hex(8)  # never derived from the secret token
        self.lock = threading.RLock()
        self.clients: set[str] = set()
        self.last_seen = time.monotonic()
        self.idle_paused = False
        self.machine: Machine | None = None
        self.config: MachineConfig | None = None
        self.generation = 0  # bumped whenever the machine is replaced
        self._queue: deque[Record] = deque()
        self._unsubscribe: Callable[[], None] | None = None
        self._keyframe_to: set[str] = set()
        self._keyframe_room = False
        self.started = time.monotonic()
        self.log: deque[dict[str, Any]] = deque(maxlen=300)
        self.console: deque[str] = deque(maxlen=300)
        self.series: deque[dict[str, Any]] = deque(maxlen=900)
        self.drained_seq = 0
        self.snapshot: MachineSnapshot | None = None
        self._sent_view: view_model.MachineView | None = None
        self._last_view_t = 0.0
        self._events_since_view = False
        self._last_sample_t = 0.0
        self._last_sample_key: tuple[Any, ...] | None = None
        #: bytes resident per block (device id → tuple), from the sampler thread
        self.residency: dict[str, tuple[int, ...]] | None = None
        self.boot_resident: int | None = None
        self.dimm_resident = 0  # bytes the session's pc-dimms hold
        self.residency_t = 0.0  # when residency was measured (monotonic)
        self.residency_seq = -1  # the machine's event seq when it was
        self.closed_reason: str | None = None  # why the machine went away under the page
        self.why_new: str | None = None  # why this session's last machine is not this one
        self._failing: str | None = None  # the pump's last failure (logged once)

    # ---------------------------------------------------------------- machine lifetime

    def start_machine(self, config: MachineConfig, load: IO[bytes] | None = None) -> None:
        """Build (or load) a machine for this session, replacing the current one."""
        machine = Machine(config, incoming=load is not None)
        try:
            if load is not None:
                engine_call(lambda: machine.load_state(cast(BinaryIO, load)))
        except BaseException:
            machine.close()
            raise
        admit = self._admit
        if admit is not None:
            control_for(machine).admission = lambda growth: admit(self, growth)
        with self.lock:
            self.stop_machine()
            self.machine = machine
            self.config = config
            self.generation += 1
            self._queue = deque()
            queue, wake = self._queue, self._wake

            def on_record(record: Record) -> None:  # on the vCPU thread: tiny
                queue.append(record)
                wake()

            self._unsubscribe = machine.bus.subscribe(on_record)
            self.residency = None
            self.boot_resident = None
            self.dimm_resident = 0
            self.residency_t = 0.0
            self.residency_seq = -1
            self.closed_reason = None
            self._failing = None
            self.log.clear()
            self.console.clear()
            self.series.clear()
            self.console.extend(machine.console)
            self.drained_seq = machine.bus.last_seq
            self.snapshot = None
            self._sent_view = None
            self._last_sample_key = None
            self.started = time.monotonic()
            self.idle_paused = False
            self._keyframe_room = True
            self._start_recording(machine, config)
            machine.start()

    def stop_machine(self) -> None:
        with self.lock:
            self._stop_recording()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            if self.machine is not None:
                self.machine.close()
                self.machine = None

    # ---------------------------------------------------------------- live recording

    def _start_recording(self, machine: Machine, config: MachineConfig) -> None:
        self._stop_recording()
        if self.max_recording_bytes <= 0:
            return
        try:
            fd, path = tempfile.mkstemp(prefix="vmemlab-live-", suffix=".ndjson",
                                        dir=self.recording_dir)
        except OSError:
            log.exception("cannot create a live recording")
            return
        stream = os.fdopen(fd, "w", encoding="ascii")
        recorder = Recorder(stream, max_bytes=self.max_recording_bytes)
        recorder.start_live("Live session", {"main": config})
        recorder.attach("main", machine)
        self.recorder, self.recording_path, self._recording_file = recorder, path, stream

    def _stop_recording(self) -> None:
        recorder, stream, path = self.recorder, self._recording_file, self.recording_path
        self.recorder = self._recording_file = self.recording_path = None
        if recorder is not None:
            recorder.close()
        if stream is not None:
            stream.close()
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def recording_now(self) -> tuple[IO[bytes], int] | None:
        """The live recording up to now (a keyframe forced first): an open file and its size.

        The caller reads ``size`` bytes from the file and closes it; a new machine meanwhile
        deletes the path but not the open file.
        """
        with self.lock:
            recorder, stream, path = self.recorder, self._recording_file, self.recording_path
            if recorder is None or stream is None or path is None:
                return None
            recorder.tick(force_keyframe=True)
            stream.flush()
            size = recorder.bytes_written
            return open(path, "rb"), size

    def want_keyframe(self, sid: str | None = None) -> None:
        with self.lock:
            if sid is None:
                self._keyframe_room = True
            else:
                self._keyframe_to.add(sid)

    # ---------------------------------------------------------------- views

    def take_snapshot(self, timeout: float = 5.0, *, residency: bool = False
                      ) -> MachineSnapshot:
        """A snapshot; with ``residency`` also a fresh host residency scan (pagemap)."""
        machine = self.machine
        if machine is None:
            raise InputError("this session has no machine")
        snap: MachineSnapshot = machine.snapshot(residency=residency)
        if residency:
            self.note_residency(snap)
        self.snapshot = snap
        return snap

    def note_residency(self, snap: MachineSnapshot) -> None:
        self.residency = {d.id: d.resident for d in snap.devices if d.resident is not None}
        self.boot_resident = snap.boot_resident
        self.dimm_resident = sum(d.resident or 0 for d in snap.dimms)
        self.residency_t = time.monotonic()
        self.residency_seq = snap.seq

    def measure_due(self, now: float, max_age: float) -> bool:
        """Worth a residency scan: the machine did something since the last one (guest
        memory fills and empties only with events: commands, plugs, unplugs, boots), or
        that one is ``max_age`` old. An idle class costs the sampler nothing."""
        machine = self.machine
        return machine is not None and (machine.bus.last_seq != self.residency_seq
                                        or now - self.residency_t >= max_age)

    def resident_bytes(self) -> int:
        """Host memory this session's guest holds, as last measured (boot RAM, devices and
        pc-dimms)."""
        if self.machine is None:
            return 0
        devices = self.residency or {}
        return ((self.boot_resident or 0) + sum(sum(blocks) for blocks in devices.values())
                + self.dimm_resident)

    def measure(self) -> int:
        """Measure the residency now (a pagemap scan, a few ms) and return it."""
        machine = self.machine
        if machine is not None:
            try:
                snap = machine.snapshot(residency=True)
            except Exception:  # closed meanwhile: it holds nothing any more
                return 0
            if self.machine is machine:
                self.note_residency(snap)
        return self.resident_bytes()

    def view(self, snap: MachineSnapshot) -> view_model.MachineView:
        return view_model.machine_view(snap, self.residency, self.boot_resident)

    def pace(self) -> dict[str, object] | None:
        """The teaching pace and the requests it holds in flight (``view``/``keyframe``)."""
        machine = self.machine
        return control_for(machine).pace().to_dict() if machine is not None else None

    def budget(self) -> dict[str, int] | None:
        """This machine's and the server's resident memory and budgets (``view``/``keyframe``
        field ``budget``); None outside a server."""
        return self._budget(self) if self._budget is not None else None

    def memdevs(self) -> dict[str, str]:
        cfg = self.config
        return {d.id: d.memdev or d.id for d in cfg.devices} if cfg else {}

    def keyframe(self, settings: Settings) -> dict[str, Any]:
        """Everything a page needs to draw this machine from scratch."""
        snap = self.take_snapshot(settings.snapshot_timeout, residency=True)
        view = self.view(snap)
        machine = self.machine
        assert machine is not None and self.config is not None
        return {
            "generation": self.generation,
            "log_seq": self.drained_seq,
            "view": view_model.encode_view(view),
            "log": list(self.log),
            "console": list(self.console),
            "series": list(self.series),
            "config": config_to_form(self.config),
            "rfc_shrink_on_reboot": self.config.rfc_shrink_on_reboot,
            "memory_devices": view_model.memory_devices(snap, self.memdevs()),
            "budget": self.budget(),
            "pace": self.pace(),
            "capabilities": {
                "step": hasattr(machine, "step"),
                "speed": hasattr(machine, "set_speed"),
            },
        }

    def _sample(self, snap: MachineSnapshot, view: view_model.MachineView, now: float,
                force: bool) -> dict[str, Any] | None:
        key = (tuple((d.requested_size, d.plugged_size) for d in snap.devices),
               view["resident"])
        if not force and key == self._last_sample_key:
            return None
        self._last_sample_key = key
        self._last_sample_t = now
        sample = {
            "t": round(now - self.started, 3),
            "seq": snap.seq,
            "devices": {d.id: [d.requested_size, d.plugged_size] for d in snap.devices},
            "resident": view["resident"],
            "rss": snap.host_rss,
        }
        self.series.append(sample)
        return sample

    # ---------------------------------------------------------------- the pump

    def pump(self, settings: Settings, emit: Emit, now: float) -> None:
        """One tick, never raising: a failure is logged once, not once per tick."""
        machine = self.machine
        try:
            self._pump(settings, emit, now)
        except MachineError as err:
            # the machine stopped working under the page (closed, broken): say so once,
            # drop it, and let the page offer a new one
            if self.machine is machine:
                log.warning("room %s: machine gone (%s); closing it", self.room, err)
                self.closed_reason = str(err)
                self.stop_machine()
                emit("machine_closed", {"error": f"this machine stopped ({err}); start a "
                                                 "new machine to go on"}, self.room)
            return
        except Exception as err:
            key = f"{type(err).__name__}: {err}"
            if key != self._failing:
                log.exception("pump failed for room %s (logged once)", self.room)
                self._failing = key
            return
        self._failing = None

    def _pump(self, settings: Settings, emit: Emit, now: float) -> None:
        """Events → ``batch``; changes → ``view``; joiners → ``keyframe``."""
        machine = self.machine
        if machine is None:
            return
        if self.recorder is not None:
            try:
                self.recorder.tick()
            except Exception:  # a broken recording must not stop the page
                log.exception("live recording failed for room %s", self.room)
                self._stop_recording()
        queue = self._queue
        records: list[Record] = []
        while queue and len(records) <= MAX_BATCH_EVENTS:
            records.append(queue.popleft())
        if len(records) > MAX_BATCH_EVENTS:
            queue.clear()
            self._keyframe_room = True
        events = []
        for record in records:
            data = record.to_dict()
            kind = data["kind"]
            if kind == "console":
                self.console.append(str(data.get("line", "")))
            elif kind in LOG_KINDS:
                self.log.append(data)
            events.append(data)
            self.drained_seq = record.seq
            self._events_since_view = True
        if self._keyframe_room:
            self._keyframe_room = False
            self._keyframe_to.clear()
            emit("keyframe", self.keyframe(settings), self.room)
            self._sent_view = self.view(self.snapshot) if self.snapshot else None
            self._last_view_t = now
            self._events_since_view = False
            return
        if events:
            emit("batch", {"generation": self.generation, "events": events}, self.room)
        due_view = (records or machine.bus.last_seq != (self.snapshot.seq if self.snapshot
                                                        else -1))
        due_sample = now - self._last_sample_t >= settings.sample_interval
        if (due_view and now - self._last_view_t >= settings.view_interval) or due_sample:
            snap = self.take_snapshot(settings.snapshot_timeout)
            view = self.view(snap)
            # codes go out whenever events happened: the page applied them on its own and
            # must be brought back to the snapshot's exact picture
            payload = view_model.encode_view(
                view, None if self._events_since_view else self._sent_view)
            self._events_since_view = False
            payload["generation"] = self.generation
            payload["sample"] = self._sample(snap, view, now, due_sample)
            payload["memory_devices"] = view_model.memory_devices(snap, self.memdevs())
            payload["budget"] = self.budget()
            payload["pace"] = self.pace()
            emit("view", payload, self.room)
            self._sent_view = view
            self._last_view_t = now
        if self._keyframe_to:
            sids, self._keyframe_to = self._keyframe_to, set()
            frame = self.keyframe(settings)
            for sid in sids:
                emit("keyframe", frame, sid)


class Task(Protocol):
    """A background task as Flask-SocketIO's ``start_background_task`` returns it."""

    def is_alive(self) -> bool: ...

    def join(self, timeout: float | None = None) -> None: ...


StartTask = Callable[..., Task]


def start_thread(target: Callable[..., object], *args: object) -> Task:
    """A daemon thread: the default way to start background tasks outside a Socket.IO app."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


class SessionManager:
    """All sessions of one app: creation under limits, the pump task, idle reclaim.

    ``start_task`` starts the background tasks (the pump, the residency sampler): the app
    passes Flask-SocketIO's ``start_background_task`` so they run the way its async mode
    wants; the default is a daemon thread.
    """

    def __init__(self, settings: Settings, emit: Emit,
                 config_factory: Callable[[], MachineConfig] = default_config, *,
                 start_task: StartTask = start_thread,
                 registry: MachineRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry  # which process runs each session's machine (shared)
        self.emit = emit
        self.config_factory = config_factory
        self._start_task = start_task
        self._sessions: dict[str, MachineSession] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Task | None = None
        self._sampler: Task | None = None
        #: periodic housekeeping the pump runs every ``chore_interval`` (e.g. share expiry)
        self.chores: list[Callable[[], None]] = []
        #: machines and resident memory the server holds outside sessions (compare labs):
        #: they count against ``max_machines`` and the memory budget too
        self.other_machines: Callable[[], int] = lambda: 0
        self.other_resident: Callable[[], int] = lambda: 0
        self.on_close: list[Callable[[], None]] = []  # run by close_all (close the labs)
        #: run with a session whose machine the idle reclaim is about to close (its last save)
        self.on_reclaim: list[Callable[[MachineSession], None]] = []
        #: reclaimed machines still being saved and closed (out of the table, holding memory
        #: and CPU until then): /healthz counts them as machines
        self._retiring = 0
        self._last_chores = 0.0

    # ---------------------------------------------------------------- lookup

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, token: str | None) -> MachineSession | None:
        if not token:
            return None
        with self._lock:
            return self._sessions.get(token)

    def sessions(self) -> list[MachineSession]:
        """Every session of this process, as a list (a copy)."""
        with self._lock:
            return list(self._sessions.values())

    def session(self, token: str) -> MachineSession:
        """This token's session, creating it (and booting its machine) if needed."""
        with self._lock:
            sess = self._sessions.get(token)
            if sess is not None:
                sess.last_seen = time.monotonic()
                return sess
            if len(self._sessions) + self.other_machines() >= self.settings.max_machines:
                self._reclaim_one_locked()
            if len(self._sessions) + self.other_machines() >= self.settings.max_machines:
                raise LimitError(
                    f"this server already runs {self.settings.max_machines} machines "
                    "(its limit); try again when a workshop seat is free")
            sess = MachineSession(token, self._wake.set,
                                  max_recording_bytes=self.settings.max_recording_bytes,
                                  recording_dir=self.settings.recording_dir,
                                  admit=self.admit_growth, budget=self.budget)
            sess.lock.acquire()
            self._sessions[token] = sess
        try:
            if self.registry is not None:
                sess.why_new = self.registry.why_new(token)
            sess.start_machine(self.config_factory())
            if self.registry is not None:
                self.registry.opened(token)
        except BaseException:
            with self._lock:
                self._sessions.pop(token, None)
            raise
        finally:
            sess.lock.release()
        self.ensure_pump()
        return sess

    def connect(self, token: str, sid: str) -> MachineSession:
        sess = self.session(token)
        with sess.lock:
            sess.clients.add(sid)
            sess.last_seen = time.monotonic()
            if sess.idle_paused and sess.machine is not None:
                sess.idle_paused = False
                sess.machine.resume()
            sess.want_keyframe(sid)
        return sess

    def disconnect(self, token: str, sid: str) -> None:
        sess = self.get(token)
        if sess is not None:
            with sess.lock:
                sess.clients.discard(sid)
                sess.last_seen = time.monotonic()

    def replace(self, token: str, config: MachineConfig, load: IO[bytes] | None = None
                ) -> MachineSession:
        sess = self.session(token)
        sess.start_machine(config, load)
        return sess

    def stats(self) -> dict[str, Any]:
        with self._lock:
            sessions = list(self._sessions.values())
            retiring = self._retiring
        return {
            "machines": len(sessions) + retiring,
            "retiring": retiring,
            "max_machines": self.settings.max_machines,
            "connected": sum(1 for s in sessions if s.clients),
            "paused_idle": sum(1 for s in sessions if s.idle_paused),
            "resident": sum(s.resident_bytes() for s in sessions) + self.other_resident(),
            "max_resident": self.settings.max_resident,
            "compare_machines": self.other_machines(),
            "max_machine_resident": self.settings.max_machine_resident,
        }

    # ---------------------------------------------------------------- memory budget

    def resident(self) -> int:
        """Host memory all guests hold, as last measured (the sampler does every interval)."""
        with self._lock:
            sessions = list(self._sessions.values())
        return sum(s.resident_bytes() for s in sessions) + self.other_resident()

    def admit_growth(self, sess: MachineSession, growth: int) -> None:
        """A session's guest memory may grow by ``growth`` bytes (0: later) -- or not: the
        machine's control layer asks this before every growth, whoever asks for it."""
        try:
            self.check_machine_budget(sess, growth)
            self.check_budget(growth, own=sess)
        except BudgetError as err:
            raise ControlError(str(err), ErrorKind.EXHAUSTED) from None

    def check_machine_budget(self, sess: MachineSession, extra: int = 0) -> None:
        """Refuse (``MachineBudgetError``) growth of one machine past its own budget, so one
        student cannot take the whole server's (``max_machine_resident``; 0: no cap)."""
        limit = self.settings.max_machine_resident
        if limit <= 0:
            return
        used = sess.measure()
        if used + extra > limit or used >= limit:
            raise MachineBudgetError(
                f"this machine's memory budget is used up ({used >> 20} of {limit >> 20} MiB "
                f"resident{f', {extra >> 20} MiB more asked for' if extra else ''}); "
                "unplug memory to give some back (free allocations, then shrink a device)")

    def budget(self, sess: MachineSession) -> dict[str, int]:
        """The numbers the page shows next to the memory: this machine's resident bytes and
        its budget, the server's and its budget (as last measured; a limit of 0: none)."""
        return {"resident": sess.resident_bytes(),
                "machine_limit": self.settings.max_machine_resident,
                "server_resident": self.resident(),
                "server_limit": self.settings.max_resident}

    def check_budget(self, extra: int = 0, own: MachineSession | None = None, *,
                     replacing: bool = False) -> None:
        """Refuse (``BudgetError``) anything that lets guest memory grow once the budget is used.

        ``extra``: bytes the operation will make resident (an allocation); 0 for operations
        that only allow growth (a new machine, a larger requested-size). ``own``'s residency
        is measured afresh; with ``replacing`` it does not count (its machine goes away).
        """
        limit = self.settings.max_resident
        if limit <= 0:
            return
        if own is not None:
            own.measure()
        used = self.resident()
        if replacing and own is not None:
            used -= own.resident_bytes()
        if used + extra > limit or used >= limit:
            raise BudgetError(
                f"the server's memory budget is used up ({used >> 20} of {limit >> 20} MiB "
                f"resident{f', {extra >> 20} MiB more asked for' if extra else ''}); "
                "free something or try later")

    # ---------------------------------------------------------------- pump + reclaim

    def ensure_pump(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = self._start_task(self._loop)
            if self._sampler is None or not self._sampler.is_alive():
                self._sampler = self._start_task(self._sample_loop)

    def _loop(self) -> None:
        """Woken by new events (or every tick for views and reclaim); ≤ emit_hz rounds/s."""
        tick = 1.0 / self.settings.emit_hz
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            start = time.monotonic()
            with self._lock:
                sessions = list(self._sessions.values())
            for sess in sessions:
                if not sess.lock.acquire(blocking=False):
                    continue  # being rebuilt: next tick
                try:
                    sess.pump(self.settings, self.emit, time.monotonic())
                finally:
                    sess.lock.release()
            self._reclaim(time.monotonic())
            self._run_chores(time.monotonic())
            self._stop.wait(max(0.0, tick - (time.monotonic() - start)))

    def _run_chores(self, now: float) -> None:
        if now - self._last_chores < self.settings.chore_interval:
            return
        self._last_chores = now
        for chore in list(self.chores):
            try:
                chore()
            except Exception:  # housekeeping must never stop the pump
                log.exception("chore %r failed", chore)

    def _sample_loop(self) -> None:
        """Host residency (pagemap over every region, ~6 ms a machine) off the event path,
        per interval, for every machine that did something: the pages show it and the
        memory budgets add it up."""
        while not self._stop.wait(self.settings.sample_interval):
            with self._lock:
                sessions = list(self._sessions.values())
            for sess in sessions:
                if self._stop.is_set():
                    break
                if sess.measure_due(time.monotonic(), IDLE_MEASURE_AGE):
                    sess.measure()

    def _reclaim(self, now: float) -> None:
        with self._lock:
            sessions = list(self._sessions.items())
        for token, sess in sessions:
            if sess.clients or sess.machine is None:
                continue
            idle = now - sess.last_seen
            if idle >= self.settings.idle_reclaim:
                with self._lock:
                    gone = self._sessions.pop(token, None)
                    if gone is not None:
                        self._retiring += 1  # until _save_and_stop has closed it
                if gone is not None:
                    self._retire(gone, idle)
            elif idle >= self.settings.idle_pause and not sess.idle_paused:
                with sess.lock:
                    if sess.machine.runstate == "running":
                        sess.machine.pause()
                        sess.idle_paused = True

    def _reclaim_one_locked(self) -> None:
        now = time.monotonic()
        idle = [(s.last_seen, t) for t, s in self._sessions.items()
                if not s.clients and now - s.last_seen > 5.0]
        if idle:
            _, token = min(idle)
            sess = self._sessions.pop(token)
            self._retiring += 1  # until _save_and_stop has closed it
            self._retire(sess, now - sess.last_seen)

    def _retire(self, sess: MachineSession, idle: float) -> None:
        """A reclaimed session (already out of the table): recorded as reclaimed, then its
        ``on_reclaim`` hooks (its last save, ~0.2 s) and its close, off the pump's thread."""
        self._note_reclaimed(sess.token, idle)
        self._start_task(self._save_and_stop, sess)

    def _save_and_stop(self, sess: MachineSession) -> None:
        try:
            for hook in list(self.on_reclaim):
                try:
                    hook(sess)
                except Exception:  # a failed save must not keep the machine
                    log.exception("reclaim hook %r failed", hook)
            sess.stop_machine()
        finally:
            with self._lock:
                self._retiring -= 1

    def _note_reclaimed(self, token: str, idle: float) -> None:
        if self.registry is not None:
            self.registry.reclaimed(token, idle)

    def _close(self, token: str) -> None:
        with self._lock:
            sess = self._sessions.pop(token, None)
        if sess is not None:
            sess.stop_machine()

    def close_sessions(self) -> None:
        """Close every machine (the pump keeps running)."""
        with self._lock:
            tokens = list(self._sessions)
        for token in tokens:
            self._close(token)

    def close_all(self) -> None:
        self._stop.set()
        self._wake.set()
        for close in self.on_close:
            close()
        for task in (self._thread, self._sampler):
            if task is not None and task is not threading.current_thread():
                task.join(timeout=5)
        with self._lock:
            tokens = list(self._sessions)
        for token in tokens:
            self._close(token)
