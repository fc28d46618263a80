"""A classroom on one server: N students each work through a worksheet on their own machine.

The server is ``vmemlab serve`` in a process of its own (so its RSS and CPU time are its
own); every student is a real Socket.IO client (python-socketio over WebSocket, its own
cookie and so its own machine). A student runs the worksheet below, timing each step the way
the page shows it: from the click (the socket event) to the page's picture being settled
(the acknowledgement, then the ``view``/``batch`` that shows the result). The same run does
N = 1 first, then N = 30 at once; each action's p50/p95 at 30 is compared with 1.

The worksheet (``STEPS``): a fresh default machine (boot), grow ``vm0`` to 512 MiB, allocate
64 MiB movable in ``vm0`` and 16 MiB unmovable in boot RAM, shrink ``vm0`` to 0 (the guest
migrates the 64 MiB out), free both, reboot, dump.

The server gets a machine rate limit the benchmark cannot hit (every student comes from
127.0.0.1, as a class behind one NAT does); the mechanism stays on.

One JSON object per result on stdout (``python -m benchmarks.classroom [N ...]``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from webapp.live import free_port

MiB = 1 << 20
STUDENTS = 30
STEPS = ("boot", "grow", "alloc_movable", "alloc_unmovable", "shrink_to_0", "free", "reboot",
         "dump")
STEP_TIMEOUT = 300.0
THINK = (1.0, 4.0)  # seconds a student reads the page and the next instruction
TARGET_RATIO = 3.0  # median action at N = 30 over the single student's median
TARGET_P95_MS = 2000.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# ---------------------------------------------------------------- the server process

class ServerProcess:
    """``vmemlab serve`` in a subprocess on a free loopback port; RSS and CPU from /proc."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {**os.environ, "VMEMLAB_RATELIMIT_MACHINES": "100000 per hour",
                   **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webapp.serve", "--port", str(self.port), *flags],
            cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.health()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("the server did not start: " + self.stderr()) from None
                time.sleep(0.1)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/healthz", timeout=5) as answer:
            return dict(json.load(answer))

    def rss(self) -> tuple[int, int]:
        """(resident now, peak resident) in bytes."""
        fields = {}
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                fields[key] = value.split()
        return int(fields["VmRSS"][0]) * 1024, int(fields["VmHWM"][0]) * 1024

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            parts = stat.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stderr(self) -> str:
        if self.proc.stderr is None or self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- one student

@dataclass
class Page:
    """What the student's page knows: the latest view, the guest's boots, refusals."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    view: dict[str, Any] | None = None
    generation: int = -1
    boots: int = 0
    closed: str | None = None

    def on_keyframe(self, data: dict[str, Any]) -> None:
        with self.cond:
            self.generation = data["generation"]
            self.view = data["view"]
            self.cond.notify_all()

    def on_view(self, data: dict[str, Any]) -> None:
        with self.cond:
            if data.get("generation") == self.generation:
                self.view = data
                self.cond.notify_all()

    def on_batch(self, data: dict[str, Any]) -> None:
        booted = sum(1 for e in data.get("events", ())
                     if e.get("kind") == "guest_status" and e.get("status") == "booted")
        if booted and data.get("generation") == self.generation:
            with self.cond:
                self.boots += booted
                self.cond.notify_all()

    def on_closed(self, data: dict[str, Any]) -> None:
        with self.cond:
            self.closed = str(data.get("error"))
            self.cond.notify_all()

    def wait(self, check: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.view is None or not check(self.view):
                if self.closed:
                    raise RuntimeError(f"machine closed: {self.closed}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the page never showed the result")
                self.cond.wait(left)


def settled(sizes: dict[str, int]) -> Callable[[dict[str, Any]], bool]:
    """The view shows each device idle at the requested size ``sizes`` asks for."""

    def check(view: dict[str, Any]) -> bool:
        devices = {d["id"]: d for d in view.get("devices", ())}
        for dev_id, size in sizes.items():
            dev = devices.get(dev_id)
            if dev is None:
                return False
            cfg = dev["config"]
            if cfg["requested_size"] != size or dev["driver_state"] != "idle":
                return False
            if cfg["plugged_size"] != min(size, cfg["usable_region_size"]):
                return False
        return bool(view.get("guest_booted"))

    return check


class Student:
    """One browser: its cookie, its socket, its page; ``run`` times every worksheet step."""

    def __init__(self, url: str, think: tuple[float, float] = (0.0, 0.0), seed: int = 0
                 ) -> None:
        import requests
        import socketio

        self.page = Page()
        http = requests.Session()
        http.get(url + "/", timeout=60).raise_for_status()
        cookie = "; ".join(f"{c.name}={c.value}" for c in http.cookies)
        self.client = socketio.Client(reconnection=False)
        self.client.on("keyframe", self.page.on_keyframe)
        self.client.on("view", self.page.on_view)
        self.client.on("batch", self.page.on_batch)
        self.client.on("machine_closed", self.page.on_closed)
        self.client.connect(url, headers={"Cookie": cookie}, transports=["websocket"],
                            wait_timeout=60)
        self.times: dict[str, float] = {}
        self.think = think
        self.rng = random.Random(seed)

    def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        answer = self.client.call(event, data, timeout=STEP_TIMEOUT)
        if not isinstance(answer, dict) or not answer.get("ok"):
            raise RuntimeError(f"{event} refused: {answer}")
        return answer

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.think[1] > 0:  # reading the page and the next instruction
            time.sleep(self.rng.uniform(*self.think))
        t0 = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - t0

    def run(self, start: threading.Barrier | None) -> None:
        page = self.page
        page.wait(settled({}), STEP_TIMEOUT)  # the first machine, booted on connect
        if start is not None:
            start.wait(STEP_TIMEOUT)
        with self.step("boot"):
            generation = page.generation
            self.call("new_machine", {"preset": "default"})
            with page.cond:
                page.cond.wait_for(lambda: page.generation != generation, STEP_TIMEOUT)
            page.wait(settled({"vm0": 256 * MiB, "vm1": 128 * MiB}), STEP_TIMEOUT)
        with self.step("grow"):
            self.call("set_requested_size", {"device": "vm0", "size": 512 * MiB})
            page.wait(settled({"vm0": 512 * MiB}), STEP_TIMEOUT)
        with self.step("alloc_movable"):
            movable = self.call("guest", {"action": "alloc", "size": 64, "target": "vm0"})
        with self.step("alloc_unmovable"):
            unmovable = self.call("guest", {"action": "alloc", "size": 16, "target": "boot",
                                            "unmovable": True})
        with self.step("shrink_to_0"):
            self.call("set_requested_size", {"device": "vm0", "size": 0})
            page.wait(settled({"vm0": 0}), STEP_TIMEOUT)
        with self.step("free"):
            for alloc in (movable, unmovable):
                self.call("guest", {"action": "free", "id": alloc["id"]})
        with self.step("reboot"):
            boots = page.boots
            self.call("reboot", {"mode": "reset"})
            with page.cond:
                page.cond.wait_for(lambda: page.boots > boots, STEP_TIMEOUT)
            page.wait(settled({"vm0": 0, "vm1": 128 * MiB}), STEP_TIMEOUT)
        with self.step("dump"):
            self.call("guest", {"action": "dump"})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()


# ---------------------------------------------------------------- a class

@dataclass
class Round:
    students: int
    times: dict[str, list[float]]
    errors: list[str]
    seconds: float
    rss_peak: int
    rss_end: int
    cpu_seconds: float

    def all_times(self) -> list[float]:
        return [t for values in self.times.values() for t in values]


def run_class(server: ServerProcess, students: int, think: tuple[float, float] = (0.0, 0.0)
              ) -> Round:
    """``students`` at once (they start together); ``think``: seconds between steps."""
    errors: list[str] = []
    times: dict[str, list[float]] = {name: [] for name in STEPS}
    lock = threading.Lock()
    barrier = threading.Barrier(students) if students > 1 else None
    rss_peak = 0
    done = threading.Event()

    def watch_rss() -> None:
        nonlocal rss_peak
        while not done.wait(0.2):
            with contextlib.suppress(OSError):
                rss_peak = max(rss_peak, server.rss()[0])

    def one(n: int) -> None:
        student: Student | None = None
        try:
            student = Student(server.url, think, seed=n)
            student.run(barrier)
        except Exception as exc:  # reported in the row (ok: false), never hidden
            errors.append(f"student {n}: {type(exc).__name__}: {exc}")
            if barrier is not None:
                barrier.abort()
        finally:
            if student is not None:
                with lock:
                    for name, value in student.times.items():
                        times[name].append(value)
                student.close()

    cpu0 = server.cpu_seconds()
    watcher = threading.Thread(target=watch_rss, daemon=True)
    watcher.start()
    threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in range(students)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(STEP_TIMEOUT * len(STEPS))
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    rss_end = server.rss()[0]
    return Round(students, times, errors, seconds, max(rss_peak, rss_end), rss_end,
                 server.cpu_seconds() - cpu0)


def _ms(values: list[float], q: float) -> float:
    return round(pct(values, q) * 1000, 1)


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1) if values else float("nan")


def _summary(single: Round, many: Round, pace: str) -> dict[str, Any]:
    every_1, every_n = single.all_times(), many.all_times()
    median_1, median_n = _median_ms(every_1), _median_ms(every_n)
    return {
        "unit": "ms", "pace": pace, "value": median_n, "p95": _ms(every_n, 0.95),
        "single_p50": median_1, "single_p95": _ms(every_1, 0.95),
        "ratio": round(median_n / median_1, 2) if median_1 else None,
        "actions": len(every_n), "class_seconds": round(many.seconds, 1),
        "server_cpu_seconds": round(many.cpu_seconds, 1),
        "server_cores_busy": round(many.cpu_seconds / many.seconds, 2) if many.seconds else None,
        "errors": many.errors[:5],
        "complete": not many.errors and all(len(v) == many.students
                                            for v in many.times.values()),
    }


def rows(single: Round, paced: Round, at_once: Round, budget: int) -> list[dict[str, Any]]:
    """Per step, then the class as a whole (paced: the targets; at once: the stress case),
    then the server's memory and CPU."""
    out: list[dict[str, Any]] = []
    n = paced.students
    for name in STEPS:
        one, lots, rush = single.times[name], paced.times[name], at_once.times[name]
        p50_1, p50_n, p50_rush = _median_ms(one), _median_ms(lots), _median_ms(rush)
        out.append({
            "bench": f"classroom_{name}", "unit": "ms", "students": n,
            "value": p50_n, "p95": _ms(lots, 0.95), "samples": len(lots),
            "single_p50": p50_1, "single_p95": _ms(one, 0.95),
            "ratio": round(p50_n / p50_1, 2) if p50_1 else None,
            "at_once_p50": p50_rush, "at_once_p95": _ms(rush, 0.95),
            "at_once_ratio": round(p50_rush / p50_1, 2) if p50_1 else None,
        })
    summary = _summary(single, paced, f"think {THINK[0]:g}-{THINK[1]:g} s between steps")
    summary["errors"] = (single.errors + paced.errors)[:5]
    out.append({
        "bench": f"classroom_{n}_students_action_p50", **summary,
        "target": f"median <= {TARGET_RATIO:g}x one student's, p95 <= {TARGET_P95_MS:g} ms",
        "ok": bool(summary["complete"] and not single.errors
                   and (summary["ratio"] or float("inf")) <= TARGET_RATIO
                   and summary["p95"] <= TARGET_P95_MS),
    })
    stress = _summary(single, at_once, "no think time: every step as soon as the last")
    # guest work is CPU-bound in the engine: n students at once need n x one student's
    # server CPU time, over the cores the server gets (other processes take their share)
    stress["cpu_floor_seconds"] = round(n * single.cpu_seconds / (os.cpu_count() or 1), 1)
    out.append({"bench": f"classroom_{n}_students_at_once_action_p50", **stress,
                "ok": bool(stress["complete"])})
    peak = max(paced.rss_peak, at_once.rss_peak)
    out.append({
        "bench": f"classroom_{n}_students_server_rss", "unit": "MiB",
        "value": round(peak / MiB), "paced_peak": round(paced.rss_peak / MiB),
        "at_once_peak": round(at_once.rss_peak / MiB), "single_peak": round(single.rss_peak / MiB),
        "single_cpu_seconds": round(single.cpu_seconds, 2),
        "machine_budget_mib": budget >> 20,
        "bound_mib": round((n * budget + single.rss_peak) / MiB),
        "target": "peak RSS <= students x per-machine budget + one student's server",
        "ok": peak <= n * budget + single.rss_peak,
    })
    return out


def wait_for_no_machines(server: ServerProcess, timeout: float = 60.0) -> None:
    """The last round's machines are gone (the server reclaims them a moment after their
    students left: ``--idle-reclaim``), so each round's memory is its own."""
    deadline = time.monotonic() + timeout
    while server.health()["machines"] and time.monotonic() < deadline:
        time.sleep(0.2)


def run(students: int = STUDENTS) -> list[dict[str, Any]]:
    from webapp.settings import Settings

    budget = Settings().max_machine_resident
    flags = ["--max-machines", str(students + 8), "--idle-pause", "1", "--idle-reclaim", "2"]
    with ServerProcess(*flags) as server:
        single = run_class(server, 1)
        wait_for_no_machines(server)
        paced = run_class(server, students, THINK)
        wait_for_no_machines(server)
        at_once = run_class(server, students)
    return rows(single, paced, at_once, budget)


if __name__ == "__main__":
    for row in run(*(int(a) for a in sys.argv[1:2])):
        print(json.dumps(row), flush=True)
