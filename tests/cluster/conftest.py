"""Fixtures for the serving tests: real gunicorn, nginx and Redis processes on loopback ports.

``deploy/cluster.sh`` (``make cluster``) starts the cluster here as it does for a workshop,
in a temporary folder with free ports. nginx and redis-server are Debian packages that
``.ci/run`` installs; where they are missing the cluster tests skip and say so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from webapp.live import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


def missing_tools() -> list[str]:
    found = {"nginx": shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"),
             "redis-server": shutil.which("redis-server"),
             "gunicorn": (VENV / "bin" / "gunicorn").exists()}
    return [name for name, ok in found.items() if not ok]


@dataclass
class Cluster:
    dir: Path
    url: str
    worker_ports: list[int]
    env: dict[str, str]

    def worker_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.worker_ports[index]}"

    def health(self, index: int) -> dict[str, object]:
        return dict(requests.get(self.worker_url(index) + "/healthz", timeout=10).json())

    def pids(self, index: int) -> list[int]:
        """The gunicorn master of worker ``index`` and its worker process."""
        master = int((self.dir / f"w{index + 1}.pid").read_text())
        children = subprocess.run(["pgrep", "-P", str(master)], capture_output=True,
                                  text=True).stdout.split()
        return [master, *map(int, children)]


def free_block(n: int) -> int:
    """The first of ``n`` consecutive ports that are free now (the workers' ports)."""
    for _ in range(50):
        first = free_port()
        probes = []
        try:
            for port in range(first, first + n):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def start_logs(run: Path) -> str:
    """The workers' and nginx's logs, for a cluster that did not start."""
    logs = sorted(run.glob("w*.log")) + sorted(run.glob("*error*.log"))
    return "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                   for log in logs)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: .ci/run installs them "
                    "(apt-get install nginx redis-server; make venv for gunicorn)")
    ports = [free_port() for _ in range(2)]
    ports.append(free_block(3))
    env = {**os.environ, "VENV": str(VENV), "VMEMLAB_CLUSTER_DIR": str(tmp_path / "cluster"),
           "VMEMLAB_CLUSTER_LISTEN": f"127.0.0.1:{ports[0]}",
           "VMEMLAB_CLUSTER_REDIS_PORT": str(ports[1]),
           "VMEMLAB_CLUSTER_WORKERS": "3", "VMEMLAB_CLUSTER_WORKER_PORT": str(ports[2]),
           # a class behind one NAT address: every student is 127.0.0.1
           "VMEMLAB_RATELIMIT_MACHINES": "1000 per minute", "VMEMLAB_MAX_MACHINES": "60"}
    worker_ports = [ports[2] + i for i in range(3)]
    script = str(ROOT / "deploy" / "cluster.sh")
    started = subprocess.run(["bash", script, "start"], env=env, capture_output=True,
                             text=True, timeout=180)
    try:
        assert started.returncode == 0, (started.stdout + started.stderr
                                         + start_logs(tmp_path / "cluster"))
        yield Cluster(tmp_path / "cluster", f"http://127.0.0.1:{ports[0]}", worker_ports, env)
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)
