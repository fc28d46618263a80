"""A classroom on one server: N students each work through a worksheet on their own machine.

The server is ``vmemlab serve`` in a process of its own (so its RSS and CPU time are its
own); every student is a real Socket.IO client (python-socketio over WebSocket, its own
cookie and so its own machine). A student runs the worksheet below, timing each step the way
the page shows it: from the click (the socket event) to the page's picture being settled
(the acknowledgement, then the ``view``/``batch`` that shows the result).

One run: one student alone; then N = 30 at a classroom's pace (they start together and
read for 1-4 s before each step: the targets); then the same 30 with no pause at all (the
stress case: guest work is CPU-bound in the engine, so it cannot beat 30 x one student's CPU
over the cores, ``cpu_floor_seconds``). Each step's p50/p95 at 30 is compared with one
student's. Then the same on ``make cluster``'s shape (nginx, Redis, 3 gunicorn workers) where
nginx and redis-server are installed.

The worksheet (``STEPS``): a fresh default machine (boot), grow ``vm0`` to 512 MiB, allocate
64 MiB movable in ``vm0`` and 16 MiB unmovable in boot RAM, shrink ``vm0`` to 0 (the guest
migrates the 64 MiB out), free both, reboot, dump.

Every student comes from 127.0.0.1, as a class behind one NAT does: the server's machine
rate limit is raised for the run; the mechanism stays on.

One JSON object per result on stdout (``python -m benchmarks.classroom [N [WORKERS]]``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
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
CLUSTER_WORKERS = 3
THINK = (1.0, 4.0)  # seconds a student reads the page and the next instruction
TARGET_RATIO = 3.0  # median action at N = 30 over the single student's median
TARGET_P95_MS = 2000.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: every student comes from 127.0.0.1: a machine rate limit the class cannot hit (the
#: mechanism stays on), and machines reclaimed a moment after their students leave, so each
#: round's memory is its own
SERVER_ENV = {"VMEMLAB_RATELIMIT_MACHINES": "100000 per hour", "VMEMLAB_IDLE_PAUSE": "1",
              "VMEMLAB_IDLE_RECLAIM": "2"}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# ---------------------------------------------------------------- the server processes

def proc_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` now (0: it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0: it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            parts = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return dict(json.load(answer))


class Servers:
    """The processes serving the class: where students go (``url``), which processes run
    machines (``pids``: their RSS and CPU) and their health checks (``health_urls``)."""

    url: str
    pids: list[int]
    health_urls: list[str]

    def machines(self) -> int:
        return sum(int(get_json(url)["machines"]) for url in self.health_urls)

    def rss(self) -> int:
        return sum(proc_rss(pid) for pid in self.pids)

    def cpu_seconds(self) -> float:
        return sum(proc_cpu(pid) for pid in self.pids)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until_up(url: str, alive: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get_json(url + "/healthz")
            return
        except OSError:
            if not alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not start") from None
            time.sleep(0.1)


class ServerProcess(Servers):
    """``vmemlab serve`` in a subprocess on a free loopback port."""

    def __init__(self, *flags: str, env: dict[str, str] | None = None) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.health_urls = [self.url + "/healthz"]
        environ = {**os.environ, **SERVER_ENV, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webapp.serve", "--port", str(port), *flags],
            cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pids = [self.proc.pid]
        try:
            wait_until_up(self.url, lambda: self.proc.poll() is None)
        except RuntimeError:
            self.close()
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ClusterProcesses(Servers):
    """``deploy/cluster.sh`` (``make cluster``): nginx, Redis and ``workers`` gunicorn
    processes, in a temporary folder on free ports; the workers' RSS and CPU count."""

    def __init__(self, workers: int, env: dict[str, str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="vmemlab-bench-cluster-")
        listen, redis_port, worker_port = free_port(), free_port(), free_port()
        self.env = {**os.environ, **SERVER_ENV, **env, "VENV": os.path.dirname(
            os.path.dirname(sys.executable)), "VMEMLAB_CLUSTER_DIR": self.dir,
            "VMEMLAB_CLUSTER_LISTEN": f"127.0.0.1:{listen}",
            "VMEMLAB_CLUSTER_REDIS_PORT": str(redis_port),
            "VMEMLAB_CLUSTER_WORKERS": str(workers),
            "VMEMLAB_CLUSTER_WORKER_PORT": str(worker_port)}
        self.url = f"http://127.0.0.1:{listen}"
        self.health_urls = [f"http://127.0.0.1:{worker_port + i}/healthz"
                            for i in range(workers)]
        started = subprocess.run(["bash", "deploy/cluster.sh", "start"], cwd=ROOT,
                                 env=self.env, capture_output=True, text=True, timeout=300)
        if started.returncode != 0:
            self.close()
            raise RuntimeError("the cluster did not start: " + started.stderr[-2000:])
        self.pids = []
        for i in range(workers):  # each gunicorn master's worker process runs the machines
            with open(os.path.join(self.dir, f"w{i + 1}.pid")) as f:
                master = f.read().strip()
            children = subprocess.run(["pgrep", "-P", master], capture_output=True,
                                      text=True).stdout.split()
            self.pids += [int(pid) for pid in children]

    def close(self) -> None:
        subprocess.run(["bash", "deploy/cluster.sh", "stop"], cwd=ROOT, env=self.env,
                       capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


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
        devices = view.get("devices") or {}  # the view's devices, by id
        for dev_id, size in sizes.items():
            dev = devices.get(dev_id)
            if dev is None:
                return False
            if dev["requested_size"] != size or dev["driver_state"] != "idle":
                return False
            if dev["plugged_size"] != min(size, dev["usable_region_size"]):
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


def run_class(server: Servers, students: int, think: tuple[float, float] = (0.0, 0.0)
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
                rss_peak = max(rss_peak, server.rss())

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
    rss_end = server.rss()
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


def rows(single: Round, paced: Round, at_once: Round, budget: int, prefix: str = "classroom",
         processes: int = 1) -> list[dict[str, Any]]:
    """Per step, then the class as a whole (paced: the targets; at once: the stress case),
    then the servers' memory and CPU (``processes`` of them)."""
    out: list[dict[str, Any]] = []
    n = paced.students
    for name in STEPS:
        one, lots, rush = single.times[name], paced.times[name], at_once.times[name]
        p50_1, p50_n, p50_rush = _median_ms(one), _median_ms(lots), _median_ms(rush)
        out.append({
            "bench": f"{prefix}_{name}", "unit": "ms", "students": n, "processes": processes,
            "value": p50_n, "p95": _ms(lots, 0.95), "samples": len(lots),
            "single_p50": p50_1, "single_p95": _ms(one, 0.95),
            "ratio": round(p50_n / p50_1, 2) if p50_1 else None,
            "at_once_p50": p50_rush, "at_once_p95": _ms(rush, 0.95),
            "at_once_ratio": round(p50_rush / p50_1, 2) if p50_1 else None,
        })
    summary = _summary(single, paced, f"think {THINK[0]:g}-{THINK[1]:g} s between steps")
    summary["errors"] = (single.errors + paced.errors)[:5]
    out.append({
        "bench": f"{prefix}_{n}_students_action_p50", "processes": processes, **summary,
        "target": f"median <= {TARGET_RATIO:g}x one student's, p95 <= {TARGET_P95_MS:g} ms",
        "ok": bool(summary["complete"] and not single.errors
                   and (summary["ratio"] or float("inf")) <= TARGET_RATIO
                   and summary["p95"] <= TARGET_P95_MS),
    })
    stress = _summary(single, at_once, "no think time: every step as soon as the last")
    # guest work is CPU-bound in the engine: n students at once need n x one student's
    # server CPU time, over the cores the server gets (other processes take their share)
    stress["cpu_floor_seconds"] = round(n * single.cpu_seconds / (os.cpu_count() or 1), 1)
    out.append({"bench": f"{prefix}_{n}_students_at_once_action_p50", "processes": processes,
                **stress,
                "ok": bool(stress["complete"])})
    peak = max(paced.rss_peak, at_once.rss_peak)
    out.append({
        "bench": f"{prefix}_{n}_students_server_rss", "unit": "MiB", "processes": processes,
        "value": round(peak / MiB), "paced_peak": round(paced.rss_peak / MiB),
        "at_once_peak": round(at_once.rss_peak / MiB), "single_peak": round(single.rss_peak / MiB),
        "single_cpu_seconds": round(single.cpu_seconds, 2),
        "machine_budget_mib": budget >> 20,
        "bound_mib": round((n * budget + single.rss_peak) / MiB),
        "target": "peak RSS <= students x per-machine budget + one student's server",
        "ok": peak <= n * budget + single.rss_peak,
    })
    return out


def wait_for_no_machines(server: Servers, timeout: float = 60.0) -> None:
    """The last round's machines are gone (the server reclaims them a moment after their
    students left: ``--idle-reclaim``), so each round's memory is its own."""
    deadline = time.monotonic() + timeout
    while server.machines() and time.monotonic() < deadline:
        time.sleep(0.2)


def one_run(servers: Servers, students: int) -> tuple[Round, Round, Round]:
    """One student alone, then the class at a classroom's pace, then all at once."""
    single = run_class(servers, 1)
    wait_for_no_machines(servers)
    paced = run_class(servers, students, THINK)
    wait_for_no_machines(servers)
    at_once = run_class(servers, students)
    return single, paced, at_once


def run(students: int = STUDENTS, workers: int = CLUSTER_WORKERS) -> list[dict[str, Any]]:
    """One server process; then ``workers`` processes behind nginx (``make cluster``),
    where nginx and redis-server are installed."""
    from webapp.settings import Settings

    budget = Settings().max_machine_resident
    with ServerProcess("--max-machines", str(students + 8)) as server:
        out = rows(*one_run(server, students), budget)
    if not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")) \
            or not shutil.which("redis-server"):
        out.append({"bench": f"classroom_{workers}_workers", "skipped":
                    "nginx or redis-server not installed (apt-get install nginx redis-server)"})
        return out
    env = {"VMEMLAB_MAX_MACHINES": str(students + 8)}
    with ClusterProcesses(workers, env) as cluster:
        out += rows(*one_run(cluster, students), budget, f"classroom_{workers}_workers",
                    processes=workers)
    return out


if __name__ == "__main__":
    for row in run(*(int(a) for a in sys.argv[1:3])):
        print(json.dumps(row), flush=True)
