"""docker-compose.yml: the cluster's shape in containers. No Docker engine runs here, so the
file is checked against Compose's own schema (``docker-compose config``, Debian's
docker-compose package, which .ci/run installs) and against the shape ``make cluster`` has."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def test_compose_file_passes_the_compose_schema(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed: .ci/run installs it (apt-get install "
                    "--no-install-recommends docker-compose); it validates without an engine")
    result = subprocess.run([binary, "-f", str(COMPOSE), "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "docker-compose.yml"  # the check is real: a typo fails it
    broken.write_text(COMPOSE.read_text().replace("restart:", "restartt:", 1))
    result = subprocess.run([binary, "-f", str(broken), "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "restartt" in result.stderr


def test_compose_has_the_clusters_shape() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    workers = {name: svc for name, svc in services.items() if name.startswith("worker")}
    assert len(workers) == 3 and {"nginx", "redis"} <= set(services)
    names = set()
    for svc in workers.values():
        env = svc["environment"]
        names.add(env["VMEMLAB_WORKER_NAME"])
        assert env["VMEMLAB_MESSAGE_QUEUE"].startswith("redis://redis:6379")
        assert env["VMEMLAB_STORE_URI"].startswith("redis://redis:6379")
        assert env["VMEMLAB_TRUSTED_PROXIES"] == "1"
        assert env["VMEMLAB_SECRET_KEY_FILE"].startswith("/run/secrets/")
        assert "deploy/gunicorn.conf.py" in svc["command"]
    assert names == {"w1", "w2", "w3"}
    conf = (ROOT / "deploy" / "nginx.compose.conf").read_text()
    assert "hash $vmemlab_route consistent;" in conf and "ip_hash" not in conf
    for name in workers:
        assert f"server {name}:5000" in conf
    # the compose nginx and the local one route the same way
    local = (ROOT / "deploy" / "nginx.conf").read_text()
    for line in ("map $cookie_vmemlab_route $vmemlab_route {",
                 "add_header Set-Cookie $vmemlab_route_cookie always;",
                 "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"):
        assert line in conf and line in local
