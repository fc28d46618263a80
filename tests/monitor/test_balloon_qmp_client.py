"""The real ``qemu.qmp`` client (and ``qmp-shell``) drives the balloon: set a target, wait for
BALLOON_CHANGE, query-balloon -- as one would drive QEMU 7.2."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError, QMPClient

from monitor.commands import context_for
from monitor.qmp import MonitorServer

from .conftest import Builder

QMP_SHELL = Path(sys.executable).parent / "qmp-shell"
BALLOON = ["-m", "1G", "-device", "virtio-balloon-pci,id=balloon0"]


@pytest.fixture
def balloon_qmp(build: Builder, tmp_path: Path) -> Iterator[str]:
    machine = build(BALLOON)
    server = MonitorServer(context_for(machine))
    path = str(tmp_path / "qmp.sock")
    server.listen("qmp", f"unix:{path}")
    yield path
    server.close()


def test_qmp_client_sets_a_target_and_waits_for_balloon_change(balloon_qmp: str) -> None:
    async def scenario() -> None:
        qmp = QMPClient("vmemlab-balloon")
        await qmp.connect(balloon_qmp)
        assert await qmp.execute("query-balloon") == {"actual": 1 << 30}
        with qmp.listener("BALLOON_CHANGE") as listener:
            assert await qmp.execute("balloon", {"value": 768 << 20}) == {}
            seen: list[int] = []
            while not seen or seen[-1] != 768 << 20:
                event = await asyncio.wait_for(listener.get(), 10)
                data = event["data"]
                assert isinstance(data, dict) and list(data) == ["actual"]
                seen.append(data["actual"])
            assert seen[0] == 1072693248  # at once: the first 1 MiB step
        assert await qmp.execute("query-balloon") == {"actual": 768 << 20}
        with pytest.raises(ExecuteError) as err:
            await qmp.execute("balloon", {"value": 0})
        assert err.value.error.error.class_ == "GenericError"
        assert err.value.error.error.desc == "Parameter 'target' expects a size"
        stats = await qmp.execute("qom-get", {"path": "/machine/peripheral/balloon0",
                                              "property": "guest-stats"})
        assert stats["stats"]["stat-total-memory"] > 0  # type: ignore[index]
        out = await qmp.execute("human-monitor-command", {"command-line": "info balloon"})
        assert out == "balloon: actual=768\r\n"
        await qmp.disconnect()

    asyncio.run(scenario())


def test_qmp_client_without_a_balloon_gets_device_not_active(build: Builder,
                                                             tmp_path: Path) -> None:
    machine = build(["-m", "256M"], settle=False)
    server = MonitorServer(context_for(machine))
    path = str(tmp_path / "q.sock")
    server.listen("qmp", f"unix:{path}")

    async def scenario() -> None:
        qmp = QMPClient("vmemlab-no-balloon")
        await qmp.connect(path)
        with pytest.raises(ExecuteError) as err:
            await qmp.execute("query-balloon")
        assert err.value.error.error.class_ == "DeviceNotActive"
        assert err.value.error.error.desc == "No balloon device has been activated"
        await qmp.disconnect()

    try:
        asyncio.run(scenario())
    finally:
        server.close()


@pytest.mark.skipif(not QMP_SHELL.exists(), reason="qmp-shell not installed")
def test_qmp_shell_balloon(balloon_qmp: str) -> None:
    env = dict(os.environ, HOME=os.environ.get("TMPDIR", "/tmp"))
    proc = subprocess.run([str(QMP_SHELL), balloon_qmp], input="balloon value=536870912\n"
                          "query-balloon\nballoon value=0\n", capture_output=True, text=True,
                          timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.replace("(QEMU) ", "\n").splitlines()
               if line.startswith("{")]
    assert replies[0] == {"return": {}}
    assert replies[1]["return"]["actual"] in range(512 << 20, (1 << 30) + 1)
    assert replies[2] == {"error": {"class": "GenericError",
                                    "desc": "Parameter 'target' expects a size"}}
