"""The production server: gunicorn with ``deploy/gunicorn.conf.py`` (one gthread worker).

A real gunicorn process serves the app; a student's page gets a machine over a real
WebSocket; SIGTERM (what a service manager or ``docker stop`` sends) must end the process
cleanly within its graceful stop, with the page told and every machine closed (its live
recording file deleted is the machine's last act).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from tests.cluster.conftest import ROOT, VENV
from webapp.live import free_port


def _wait_health(url: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url + "/healthz", timeout=2).raise_for_status()
            return
        except requests.RequestException:
            assert proc.poll() is None, "gunicorn ended before it served"
            assert time.monotonic() < deadline, "gunicorn did not answer"
            time.sleep(0.1)


def test_sigterm_closes_every_machine_and_ends_the_process(tmp_path: Path) -> None:
    gunicorn = VENV / "bin" / "gunicorn"
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed in this venv (make venv installs it)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    env = {**os.environ, "VMEMLAB_BIND": f"127.0.0.1:{port}",
           "VMEMLAB_RECORDING_DIR": str(recordings), "VMEMLAB_WORKER_NAME": "solo"}
    proc = subprocess.Popen(
        [str(gunicorn), "-c", "deploy/gunicorn.conf.py",
         "--control-socket", str(tmp_path / "gunicorn.ctl")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = socketio.Client(reconnection=False)
    try:
        _wait_health(url, proc)
        pages = [requests.Session() for _ in range(2)]
        for page in pages:
            page.get(url + "/", timeout=30).raise_for_status()
        # one student on a socket, one through the JSON API
        closed: list[dict[str, Any]] = []
        keyframe = threading.Event()
        client.on("keyframe", lambda data: keyframe.set())
        client.on("machine_closed", closed.append)
        cookie = "; ".join(f"{c.name}={c.value}" for c in pages[0].cookies)
        client.connect(url, headers={"Cookie": cookie}, transports=["websocket"],
                       wait_timeout=30)
        assert keyframe.wait(30)
        token = pages[1].get(url + "/api/csrf-token", timeout=30).json()["csrf_token"]
        status = pages[1].get(url + "/api/machine/status", headers={"X-CSRFToken": token},
                              timeout=30)
        assert status.status_code == 200, status.text
        health = requests.get(url + "/healthz", timeout=10).json()
        assert health["worker"] == "solo" and health["machines"] == 2
        assert len(list(recordings.iterdir())) == 2  # each machine's live recording

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        client.disconnect()
    assert proc.returncode == 0, output
    assert took < 15, f"the graceful stop took {took:.1f} s"  # generous: 20 s is the cap
    assert "shut down, 2 machine(s) closed" in output, output
    assert list(recordings.iterdir()) == []  # both machines closed
    assert closed and closed[0]["error"].startswith("the server is shutting down")
