"""Real QEMU clients drive vmemlab: ``qemu.qmp.QMPClient`` and ``qmp-shell``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from emulator import Machine
from monitor.qmp import MonitorServer

from .conftest import wait_settled

QMP_SHELL = Path(sys.executable).parent / "qmp-shell"


@pytest.fixture
def qmp_path(server: MonitorServer, tmp_path: Path) -> str:
    path = str(tmp_path / "qmp.sock")
    server.listen("qmp", f"unix:{path}")
    return path


async def _next(listener: Any, name: str, timeout: float = 10.0) -> dict[str, Any]:
    while True:
        event = await asyncio.wait_for(listener.get(), timeout)
        if event["event"] == name:
            return dict(event)


def test_qmp_client_resize_events_reset(qmp_path: str, machine: Machine) -> None:
    async def scenario() -> None:
        qmp = QMPClient("vmemlab-test")
        await qmp.connect(qmp_path)
        assert qmp.greeting is not None
        assert qmp.greeting.QMP.capabilities == ["oob"]
        devices = await qmp.execute("query-memory-devices")
        assert isinstance(devices, list) and devices[0]["data"]["size"] == 536870912
        with qmp.listener() as listener:
            await asyncio.sleep(1.1)  # let any throttled boot-time events pass
            t0 = time.time()
            await qmp.execute("qom-set", {"path": "/machine/peripheral/vm0",
                                          "property": "requested-size", "value": 1 << 30})
            sizes: list[int] = []
            while not sizes or sizes[-1] != 1 << 30:
                ev = await _next(listener, "MEMORY_DEVICE_SIZE_CHANGE")
                assert ev["data"]["qom-path"] == "/machine/peripheral/vm0"
                assert ev["data"]["id"] == "vm0"
                assert list(ev["data"]) == ["size", "qom-path", "id"]
                assert ev["timestamp"]["seconds"] >= int(t0) - 1
                sizes.append(ev["data"]["size"])
            assert 1 <= len(sizes) <= 2  # throttled: first at once, the rest merged
            await asyncio.sleep(1.1)
            await qmp.execute("system_reset")
            first = await asyncio.wait_for(listener.get(), 5)
            second = await asyncio.wait_for(listener.get(), 5)
            assert first["event"] == "MEMORY_DEVICE_SIZE_CHANGE"
            assert isinstance(first["data"], dict) and first["data"]["size"] == 0
            assert second["event"] == "RESET"
            assert second["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
            # the rebooted guest plugs back to requested-size
            while True:
                ev = await _next(listener, "MEMORY_DEVICE_SIZE_CHANGE", 5)
                if ev["data"]["size"] == 1 << 30:
                    break
        devices = await qmp.execute("query-memory-devices")
        assert isinstance(devices, list)
        assert devices[0]["data"]["size"] == devices[0]["data"]["requested-size"] == 1 << 30
        with pytest.raises(ExecuteError) as err:
            await qmp.execute("qom-set", {"path": "vm9", "property": "requested-size",
                                          "value": 0})
        assert err.value.error.error.class_ == "DeviceNotFound"
        assert err.value.error.error.desc == "Device 'vm9' not found"
        out = await qmp.execute("human-monitor-command", {"command-line": "info numa"})
        assert out == ("1 nodes\r\nnode 0 cpus: 0 1\r\nnode 0 size: 2048 MB\r\n"
                       "node 0 plugged: 1024 MB\r\n")
        await qmp.disconnect()

    asyncio.run(scenario())


def test_two_clients_get_events(qmp_path: str, machine: Machine) -> None:
    async def scenario() -> None:
        a, b = QMPClient("a"), QMPClient("b")
        await a.connect(qmp_path)
        await b.connect(qmp_path)
        with a.listener("RESET") as la, b.listener("RESET") as lb:
            await a.execute("system_reset")
            ea = await asyncio.wait_for(la.get(), 5)
            eb = await asyncio.wait_for(lb.get(), 5)
            assert ea["timestamp"] == eb["timestamp"]
        await b.disconnect()
        status = await a.execute("query-status")
        assert isinstance(status, dict) and status["status"] == "running"
        await a.disconnect()

    asyncio.run(scenario())
    wait_settled(machine)


def _shell(args: list[str], commands: str) -> str:
    env = dict(os.environ, HOME=os.environ.get("TMPDIR", "/tmp"))
    proc = subprocess.run([str(QMP_SHELL), *args], input=commands, capture_output=True,
                          text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(not QMP_SHELL.exists(), reason="qmp-shell not installed")
def test_qmp_shell(qmp_path: str, machine: Machine) -> None:
    out = _shell([qmp_path], "query-status\n"
                 "qom-set path=vm0 property=requested-size value=1073741824\n"
                 "qom-get path=vm0 property=requested-size\n"
                 "qom-set path=vm0 property=size value=1\n"
                 "query-memory-devices\n")
    replies = [json.loads(line)
               for line in out.replace("(QEMU) ", "\n").splitlines() if line.startswith("{")]
    assert replies[0] == {"return": {"status": "running", "singlestep": False, "running": True}}
    assert replies[1] == {"return": {}}
    assert replies[2] == {"return": 1073741824}
    assert replies[3] == {"error": {"class": "GenericError",
                                    "desc": "Property 'virtio-mem.size' is not writable"}}
    assert replies[4]["return"][0]["data"]["requested-size"] == 1073741824
    hmp = _shell(["-H", qmp_path], "info status\nqom-get vm0 requested-size\nfoo\n")
    assert "VM status: running" in hmp and "1073741824" in hmp
    assert "unknown command: 'foo'" in hmp
