"""A class on several worker processes behind nginx (``make cluster``): spread, affinity, and
a worker that dies mid-class.

Every student comes from 127.0.0.1, as a class behind one NAT address does: nginx must spread
them by their cookie, not their address. Each student is a real Socket.IO client with its own
cookies and so its own machine on one of the three workers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import requests
import socketio

from tests.cluster.conftest import Cluster

STUDENTS = 60


class Student:
    """A browser: page load (cookies), then a socket that reconnects like the page's."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.get(url + "/", timeout=60).raise_for_status()
        self.cookie = "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)
        self.keyframes = 0
        self.errors: list[dict[str, Any]] = []
        self.disconnects = 0
        self.changed = threading.Condition()
        self.client = socketio.Client(reconnection=True, reconnection_delay=0.2,
                                      reconnection_delay_max=1.0)
        self.client.on("keyframe", self._on_keyframe)
        self.client.on("server_error", self._on_error)
        self.client.on("machine_closed", self._on_closed)
        self.closed: list[dict[str, Any]] = []
        self.client.on("disconnect", self._on_disconnect)

    def _on_keyframe(self, data: dict[str, Any]) -> None:
        with self.changed:
            self.keyframes += 1
            self.changed.notify_all()

    def _on_error(self, data: dict[str, Any]) -> None:
        with self.changed:
            self.errors.append(data)
            self.changed.notify_all()

    def _on_closed(self, data: dict[str, Any]) -> None:
        with self.changed:
            self.closed.append(data)
            self.changed.notify_all()

    def _on_disconnect(self, reason: Any = None) -> None:
        with self.changed:
            self.disconnects += 1
            self.changed.notify_all()

    def connect(self) -> None:
        self.client.connect(self.url, headers={"Cookie": self.cookie},
                            transports=["websocket"], wait_timeout=60)

    def wait_keyframes(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.keyframes >= count, timeout)

    def wait_error(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: bool(self.errors), timeout)

    def worker(self) -> str:
        return str(self.http.get(self.url + "/healthz", timeout=30).json()["worker"])

    def close(self) -> None:
        self.client.disconnect()


def _class_of(cluster: Cluster, n: int) -> list[Student]:
    students: list[Student] = []
    failures: list[str] = []
    lock = threading.Lock()

    def join() -> None:
        try:
            student = Student(cluster.url)
            student.connect()
            with lock:
                students.append(student)
        except Exception as exc:  # reported below with the count
            failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=join) for _ in range(n)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:3]
    for student in students:
        assert student.wait_keyframes(1, 60), "a student never got their machine"
    return students


def test_a_class_behind_one_address_spreads_over_the_workers_and_survives_one_dying(
        cluster: Cluster) -> None:
    students = _class_of(cluster, STUDENTS)
    try:
        # each student has a machine, on the worker their cookie chose, every time
        homes = {id(s): s.worker() for s in students}
        assert all(s.worker() == homes[id(s)] for s in students[:10])
        per_worker = Counter(homes.values())
        assert len(per_worker) >= 2, per_worker
        machines = [int(str(cluster.health(i)["machines"])) for i in range(3)]
        assert sum(machines) == STUDENTS, (machines, per_worker)
        assert sorted(machines) == sorted(per_worker.get(f"w{i + 1}", 0) for i in range(3))

        # a worker dies mid-class (killed, no goodbye): the one with most students
        victim_name, _ = per_worker.most_common(1)[0]
        victim = int(victim_name[1:]) - 1
        for pid in cluster.pids(victim):
            os.kill(pid, signal.SIGKILL)
        hit = [s for s in students if homes[id(s)] == victim_name]
        spared = [s for s in students if homes[id(s)] != victim_name]

        # its students: told why, and a new machine on another worker
        for student in hit:
            assert student.wait_keyframes(2, 60), "a student of the dead worker got no machine"
            assert student.wait_error(10), "a student of the dead worker was not told"
            message = student.errors[-1]["error"]
            assert message == (f"the server process that ran your machine ({victim_name}) "
                               "has stopped; this is a new machine"), message
            assert student.worker() != victim_name
        # everybody else: nothing happened
        time.sleep(1.0)
        for student in spared:
            assert student.disconnects == 0 and not student.errors and student.keyframes == 1
        alive = [i for i in range(3) if i != victim]
        assert sum(int(str(cluster.health(i)["machines"])) for i in alive) == STUDENTS
    finally:
        for student in students:
            student.close()


def test_a_worker_stopped_gracefully_tells_only_its_own_students(cluster: Cluster) -> None:
    """SIGTERM to one worker (a restart, a deploy): its students are told the server is
    shutting down, then get a new machine elsewhere; the goodbye does not cross the message
    queue to the other workers' students."""
    students = _class_of(cluster, 12)
    try:
        homes = {id(s): s.worker() for s in students}
        per_worker = Counter(homes.values())
        assert len(per_worker) >= 2, per_worker
        victim_name, _ = per_worker.most_common(1)[0]
        victim = int(victim_name[1:]) - 1
        master = cluster.pids(victim)[0]
        os.kill(master, signal.SIGTERM)
        hit = [s for s in students if homes[id(s)] == victim_name]
        spared = [s for s in students if homes[id(s)] != victim_name]
        for student in hit:
            assert student.wait_keyframes(2, 60), "no new machine after the worker stopped"
            assert student.closed and student.closed[0]["error"].startswith(
                "the server is shutting down")
            assert student.worker() != victim_name
        time.sleep(1.0)
        for student in spared:
            assert not student.closed and not student.errors and student.disconnects == 0
    finally:
        for student in students:
            student.close()


def test_the_healthz_of_each_worker_names_it(cluster: Cluster) -> None:
    names = {str(cluster.health(i)["worker"]) for i in range(3)}
    assert names == {"w1", "w2", "w3"}
    # through nginx, a fresh browser's first request already lands where its cookie will
    for _ in range(10):
        http = requests.Session()
        first = http.get(cluster.url + "/healthz", timeout=10)
        assert "vmemlab_route" in http.cookies
        again = {http.get(cluster.url + "/healthz", timeout=10).json()["worker"]
                 for _ in range(3)}
        assert again == {first.json()["worker"]}


def _csrf(http: requests.Session, url: str) -> str:
    token = str(http.get(url + "/api/csrf-token", timeout=30).json()["csrf_token"])
    http.headers["X-CSRFToken"] = token
    return token


def test_a_teacher_on_another_worker_sees_every_student(cluster: Cluster) -> None:
    """60 students over the workers join one class; the teacher, whose requests one worker
    answers, sees all 60 machines (the class registry in Redis, each worker publishing its
    own students), and "pause all" reaches every worker's machines."""
    teacher = requests.Session()
    _csrf(teacher, cluster.url)
    created = teacher.post(cluster.url + "/class/new", data={"title": "cluster"},
                           allow_redirects=False, timeout=30)
    assert created.status_code == 302, created.text
    code = created.headers["Location"].split("/")[2]
    teacher_worker = str(teacher.get(cluster.url + "/healthz", timeout=30).json()["worker"])
    students = _class_of(cluster, STUDENTS)
    try:
        for i, student in enumerate(students):
            _csrf(student.http, cluster.url)
            joined = student.http.post(cluster.url + "/class/join",
                                       data={"code": code, "name": f"student {i:02d}"},
                                       allow_redirects=False, timeout=30)
            assert joined.status_code == 302, joined.text
        homes = Counter(s.worker() for s in students)
        assert len(homes) >= 2 and set(homes) - {teacher_worker}, (homes, teacher_worker)

        def roster() -> list[dict[str, Any]]:
            answer = teacher.get(f"{cluster.url}/class/{code}/roster", timeout=30)
            assert answer.status_code == 200, answer.text
            return list(answer.json()["students"])

        deadline = time.monotonic() + 60
        while True:  # every student published by the worker that runs their machine
            listed = roster()
            published = [s for s in listed if s["status"] and s["status"]["devices"]]
            if len(published) == STUDENTS:
                break
            assert time.monotonic() < deadline, (len(listed), len(published))
            time.sleep(0.5)
        assert sorted(s["name"] for s in listed) == [f"student {i:02d}" for i in range(STUDENTS)]
        assert Counter(s["status"]["worker"] for s in listed) == homes
        # a student's own requests, whatever worker answers, never reach the roster
        assert students[0].http.get(f"{cluster.url}/class/{code}/roster",
                                    timeout=30).status_code == 403

        paused = teacher.post(f"{cluster.url}/class/{code}/command", json={"action": "pause"},
                              timeout=30)
        assert paused.status_code == 200, paused.text
        deadline = time.monotonic() + 60
        while True:
            states = Counter(s["status"]["runstate"] for s in roster())
            if states == Counter({"paused": STUDENTS}):
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.5)
        for student in students[:10]:
            status = student.http.get(cluster.url + "/api/machine/status", timeout=30).json()
            assert status["runstate"] == "paused"
    finally:
        for student in students:
            student.close()
