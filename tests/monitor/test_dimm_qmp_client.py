"""The real ``qemu.qmp`` client hot(un)plugs a DIMM: object-add, device_add, device_del and the
events, as reference/qemu-transcripts/12_dimm.txt shows them, over a real unix socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from monitor.commands import context_for
from monitor.qmp import MonitorServer

from .conftest import Builder

DIMM_MACHINE = ["-m", "1G,slots=4,maxmem=8G", "-smp", "2"]
NORMAL_MACHINE = [*DIMM_MACHINE, "-append", "memhp_default_state=online"]


async def _hotplug_events(listener: Any, count: int) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []
    while len(got) < count:
        event = await asyncio.wait_for(listener.get(), 10)
        if event["event"] in ("ACPI_DEVICE_OST", "DEVICE_DELETED"):
            got.append((str(event["event"]), dict(event["data"])))
    return got


def _serve(build: Builder, tmp_path: Path, argv: list[str]) -> tuple[str, MonitorServer]:
    machine = build(argv)
    server = MonitorServer(context_for(machine))
    path = str(tmp_path / "qmp.sock")
    server.listen("qmp", f"unix:{path}")
    return path, server


def test_qmp_client_plugs_and_unplugs_a_dimm(build: Builder, tmp_path: Path) -> None:
    path, server = _serve(build, tmp_path, DIMM_MACHINE)

    async def scenario() -> None:
        qmp = QMPClient("vmemlab-dimm")
        await qmp.connect(path)
        with qmp.listener() as listener:
            assert await qmp.execute("object-add", {"qom-type": "memory-backend-ram",
                                                    "id": "d1", "size": 1 << 30}) == {}
            assert await qmp.execute("device_add", {"driver": "pc-dimm", "id": "dimm1",
                                                    "memdev": "d1"}) == {}
            assert await _hotplug_events(listener, 1) == [
                ("ACPI_DEVICE_OST", {"info": {"device": "dimm1", "source": 1, "status": 0,
                                              "slot": "0", "slot-type": "DIMM"}})]
            devices = await qmp.execute("query-memory-devices")
            assert isinstance(devices, list)
            assert devices[0]["type"] == "dimm" and devices[0]["data"]["id"] == "dimm1"
            with pytest.raises(ExecuteError) as err:
                await qmp.execute("object-del", {"id": "d1"})
            assert err.value.error.error.class_ == "GenericError"
            assert err.value.error.error.desc == "object 'd1' is in use, can not be deleted"
            with pytest.raises(ExecuteError) as err:
                await qmp.execute("device_del", {"id": "nosuch"})
            assert err.value.error.error.class_ == "DeviceNotFound"
            assert await qmp.execute("device_del", {"id": "dimm1"}) == {}
            assert await _hotplug_events(listener, 3) == [
                ("ACPI_DEVICE_OST", {"info": {"device": "dimm1", "source": 3, "status": 132,
                                              "slot": "0", "slot-type": "DIMM"}}),
                ("DEVICE_DELETED", {"device": "dimm1", "path": "/machine/peripheral/dimm1"}),
                ("ACPI_DEVICE_OST", {"info": {"source": 3, "status": 0, "slot": "0",
                                              "slot-type": "DIMM"}})]
        assert await qmp.execute("object-del", {"id": "d1"}) == {}
        assert await qmp.execute("query-memory-devices") == []
        status = await qmp.execute("query-acpi-ospm-status")
        assert isinstance(status, list)
        assert status[0] == {"source": 3, "status": 0, "slot": "0", "slot-type": "DIMM"}
        await qmp.disconnect()

    try:
        asyncio.run(scenario())
    finally:
        server.close()


def test_qmp_client_sees_a_refused_unplug(build: Builder, tmp_path: Path) -> None:
    path, server = _serve(build, tmp_path, NORMAL_MACHINE)

    async def scenario() -> None:
        qmp = QMPClient("vmemlab-dimm")
        await qmp.connect(path)
        with qmp.listener() as listener:
            await qmp.execute("object-add", {"qom-type": "memory-backend-ram", "id": "d1",
                                             "size": 1 << 30})
            await qmp.execute("device_add", {"driver": "pc-dimm", "id": "dimm1",
                                             "memdev": "d1"})
            await _hotplug_events(listener, 1)
            out = await qmp.execute("human-monitor-command",
                                    {"command-line": "guest pin 16M dimm1"})
            assert isinstance(out, str) and out.startswith("allocation 1: 4096 pages")
            await qmp.execute("device_del", {"id": "dimm1"})
            assert [e[1]["info"]["status"] for e in await _hotplug_events(listener, 2)] == [
                132, 130]
            with pytest.raises(asyncio.TimeoutError):  # no DEVICE_DELETED follows
                await asyncio.wait_for(listener.get(), 0.5)
        devices = await qmp.execute("query-memory-devices")
        assert isinstance(devices, list) and devices[0]["data"]["id"] == "dimm1"
        await qmp.disconnect()

    try:
        asyncio.run(scenario())
    finally:
        server.close()
