"""pc-dimm hot(un)plug against reference/qemu-transcripts/12_dimm.txt, command by command.

Texts, events and their order are QEMU 7.2's, copied from the transcript. The systematic
differences of an arm "virt" machine from q35: the device-memory area starts at 0x80000000
(1 GiB of boot RAM at 0x40000000, aligned up to 1 GiB) where q35 uses 0x100000000, so
addresses and Linux memory block numbers (memory16.. instead of memory32..) differ; the boot
RAM backend is ``mach-virt.ram`` where q35 has ``pc.ram``; there is no ACPI CPU hotplug, so
``query-acpi-ospm-status`` lists the DIMM slots only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emulator import Machine
from monitor import run_hmp
from monitor.cmdline import CmdlineError, parse_args
from monitor.commands import MonitorError, context_for
from monitor.qmp import QMP_COMMANDS

from .conftest import Builder

DIMM_MACHINE = ["-m", "1G,slots=4,maxmem=8G", "-smp", "2",
                "-append", "memhp_default_state=online_movable"]
NORMAL_MACHINE = ["-m", "1G,slots=4,maxmem=8G", "-smp", "2",
                  "-append", "memhp_default_state=online"]
AREA = 0x80000000  # q35: 0x100000000
NO_SLOTS = "no slots where allocated, please specify the 'slots' option"


def qmp(machine: Machine, name: str, args: dict[str, Any] | None = None) -> Any:
    """Run a QMP command as the QMP server does; a ``MonitorError`` is QEMU's error reply."""
    ctx = context_for(machine)
    _spec, fn = QMP_COMMANDS[name]
    return ctx.run(lambda: fn(ctx, dict(args or {})))


def qmp_error(machine: Machine, name: str, args: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(MonitorError) as err:
        qmp(machine, name, args)
    return {"class": err.value.cls, "desc": err.value.desc}


class Events:
    """QMP events of a machine as its clients receive them (``data`` of each)."""

    def __init__(self, machine: Machine) -> None:
        self.got: list[dict[str, Any]] = []
        context_for(machine).events.add_sink(self.got.append)

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.got if e["event"] == name]

    def hotplug(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e["event"], e["data"]) for e in self.got
                if e["event"] in ("ACPI_DEVICE_OST", "DEVICE_DELETED")]

    def wait(self, predicate: Callable[[list[tuple[str, dict[str, Any]]]], bool],
             timeout: float = 10.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.hotplug()):
                return self.hotplug()
            time.sleep(0.01)
        raise AssertionError(f"events so far: {self.hotplug()}")


def ost(source: int, status: int, slot: int, device: str | None = None
        ) -> tuple[str, dict[str, Any]]:
    info: dict[str, Any] = {"device": device} if device else {}
    info.update({"source": source, "status": status, "slot": str(slot), "slot-type": "DIMM"})
    return ("ACPI_DEVICE_OST", {"info": info})


def deleted(dev: str) -> tuple[str, dict[str, Any]]:
    return ("DEVICE_DELETED", {"device": dev, "path": f"/machine/peripheral/{dev}"})


def dimm_text(dev: str, addr: int, slot: int, size: int, memdev: str,
              hotplugged: bool = True) -> str:
    return (f'Memory device [dimm]: "{dev}"\n  addr: 0x{addr:x}\n  slot: {slot}\n  node: 0\n'
            f"  size: {size}\n  memdev: /objects/{memdev}\n"
            f"  hotplugged: {'true' if hotplugged else 'false'}\n  hotpluggable: true\n")


def numa(size_mb: int, plugged_mb: int) -> str:
    return (f"1 nodes\nnode 0 cpus: 0 1\nnode 0 size: {size_mb} MB\n"
            f"node 0 plugged: {plugged_mb} MB\n")


def empty_slots(first: int = 0, source: int = 0) -> list[dict[str, Any]]:
    return [{"source": source, "status": 0, "slot": str(s), "slot-type": "DIMM"}
            for s in range(first, 4)]


def plug(machine: Machine, events: Events, dev: str, memdev: str, size: str) -> None:
    assert run_hmp(machine, f"object_add memory-backend-ram,id={memdev},size={size}") == ""
    assert run_hmp(machine, f"device_add pc-dimm,id={dev},memdev={memdev}") == ""
    events.wait(lambda evs: any(e[0] == "ACPI_DEVICE_OST" and e[1]["info"].get("device") == dev
                                for e in evs))


def memory_blocks(machine: Machine, dev: str) -> list[str]:
    out = run_hmp(machine, "info guest")
    start = out.index(f"{dev} (slot")
    return [line.strip() for line in out[start:].splitlines()[1:]
            if line.startswith("  memory")]


# ------------------------------------------------------------------------------ 12a

@pytest.mark.parametrize("memory", ["1G", "1G,maxmem=4G", "1G,slots=0,maxmem=4G"])
def test_12a_without_slots_device_add_is_refused(build: Builder, memory: str) -> None:
    machine = build(["-m", memory, "-smp", "2", "-S"], start=False)
    assert run_hmp(machine, "object_add memory-backend-ram,id=d1,size=1G") == ""
    assert run_hmp(machine, "device_add pc-dimm,id=dimm1,memdev=d1") == f"Error: {NO_SLOTS}\n"
    assert qmp_error(machine, "device_add", {"driver": "pc-dimm", "id": "dimm1",
                                             "memdev": "d1"}) == {"class": "GenericError",
                                                                  "desc": NO_SLOTS}
    assert run_hmp(machine, "info memory-devices") == ""


def test_12a_slots_without_maxmem_fail_at_startup() -> None:
    with pytest.raises(CmdlineError) as err:
        parse_args(["-m", "1G,slots=4"])
    assert str(err.value) == "vmemlab: slots specified but no max-size"
    run = subprocess.run([sys.executable, "-m", "vmemlab", "run", "-machine", "q35", "-m",
                          "1G,slots=4", "-smp", "2", "-S", "-monitor", "none"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "vmemlab: slots specified but no max-size\n" in run.stderr


# ------------------------------------------------------------------------------ 12b

def test_12b_empty_machine(build: Builder) -> None:
    machine = build(DIMM_MACHINE)
    assert run_hmp(machine, "info memory-devices") == ""
    assert run_hmp(machine, "info numa") == numa(1024, 0)
    assert run_hmp(machine, "info memory_size_summary") == (
        "base memory: 1073741824\nplugged memory: 0\n")
    assert qmp(machine, "query-memory-devices") == []
    assert qmp(machine, "query-acpi-ospm-status") == empty_slots()


def test_12b_hotplug_and_unplug_a_1g_dimm(build: Builder) -> None:
    machine = build(DIMM_MACHINE)
    events = Events(machine)
    assert run_hmp(machine, "object_add memory-backend-ram,id=d1,size=1G") == ""
    assert run_hmp(machine, "device_add pc-dimm,id=dimm1,memdev=d1") == ""
    assert events.wait(lambda e: len(e) >= 1) == [ost(1, 0, 0, "dimm1")]
    assert run_hmp(machine, "info memory-devices") == dimm_text("dimm1", AREA, 0, 1 << 30, "d1")
    assert run_hmp(machine, "info numa") == numa(2048, 1024)
    assert run_hmp(machine, "info memory_size_summary") == (
        "base memory: 1073741824\nplugged memory: 1073741824\n")
    assert qmp(machine, "query-acpi-ospm-status") == [
        {"device": "dimm1", "source": 1, "status": 0, "slot": "0", "slot-type": "DIMM"},
        *empty_slots(1)]
    # the guest onlined its 8 memory blocks to ZONE_MOVABLE (memory32..39 on q35)
    assert memory_blocks(machine, "dimm1") == ["memory16..23: online zones=Movable"]
    devices = qmp(machine, "query-memory-devices")
    assert devices == [{"type": "dimm", "data": {
        "memdev": "/objects/d1", "hotplugged": True, "addr": AREA, "hotpluggable": True,
        "size": 1073741824, "slot": 0, "node": 0, "id": "dimm1"}}]
    assert list(devices[0]["data"]) == ["memdev", "hotplugged", "addr", "hotpluggable", "size",
                                        "slot", "node", "id"]
    assert run_hmp(machine, "qom-get dimm1 addr") == f"{AREA}\n"
    assert run_hmp(machine, "qom-get dimm1 slot") == "0\n"
    assert run_hmp(machine, "qom-get dimm1 size") == "1073741824\n"
    assert run_hmp(machine, "qom-get dimm1 node") == "0\n"
    assert run_hmp(machine, "qom-list dimm1") == (
        "type (string)\nparent_bus (link<bus>)\nrealized (bool)\nhotplugged (bool)\n"
        "hotpluggable (bool)\nmemdev (link<memory-backend>)\nnode (uint32)\naddr (uint64)\n"
        "legacy-memdev (str)\nslot (int32)\nsize (uint64)\n")
    backend = ("  size:  1073741824\n  merge: true\n  dump: true\n  prealloc: false\n"
               "  share: false\n  reserve: true\n  policy: default\n  host nodes: \n")
    assert run_hmp(machine, "info memdev") == (
        "memory backend: d1\n" + backend + "memory backend: mach-virt.ram\n" + backend)

    assert run_hmp(machine, "device_del dimm1") == ""
    assert events.wait(lambda e: len(e) >= 4) == [
        ost(1, 0, 0, "dimm1"), ost(3, 132, 0, "dimm1"), deleted("dimm1"), ost(3, 0, 0)]
    assert run_hmp(machine, "object_del d1") == ""
    assert run_hmp(machine, "info memory-devices") == ""
    assert run_hmp(machine, "info numa") == numa(1024, 0)
    assert run_hmp(machine, "info memory_size_summary") == (
        "base memory: 1073741824\nplugged memory: 0\n")
    assert qmp(machine, "query-acpi-ospm-status") == [
        {"source": 3, "status": 0, "slot": "0", "slot-type": "DIMM"}, *empty_slots(1)]


# (command, exact output) in the transcript's order, with dimm1 (d1, 1G) plugged
ERRORS = [
    ("object_del d1", "Error: object 'd1' is in use, can not be deleted\n"),
    ("device_add pc-dimm,id=dimm1,memdev=d1", "Error: Duplicate device ID 'dimm1'\n"),
    ("device_add pc-dimm,id=dimm9,memdev=d1", "Error: can't use already busy memdev: d1\n"),
    ("device_add pc-dimm,id=dimm9", "Error: 'memdev' property must be set\n"),
    ("device_add pc-dimm,id=dimm9,memdev=nope", "Error: Device 'nope' not found\n"),
    ("object_add memory-backend-ram,id=u1,size=3M", ""),
    ("device_add pc-dimm,id=du1,memdev=u1",
     "Error: backend memory size must be multiple of 0x200000\n"),
    ("object_add memory-backend-ram,id=u2,size=1M", ""),
    ("device_add pc-dimm,id=du2,memdev=u2",
     "Error: backend memory size must be multiple of 0x200000\n"),
    ("object_add memory-backend-ram,id=u3,size=4k", ""),
    ("device_add pc-dimm,id=du3,memdev=u3",
     "Error: backend memory size must be multiple of 0x200000\n"),
    ("object_add memory-backend-ram,id=big,size=16G", ""),
    ("device_add pc-dimm,id=dbig,memdev=big",
     "Error: not enough space, currently 0x40000000 in use of total space for memory devices "
     "0x1c0000000\n"),
    ("object_add memory-backend-ram,id=big2,size=7G", ""),
    ("device_add pc-dimm,id=dbig2,memdev=big2",
     "Error: not enough space, currently 0x40000000 in use of total space for memory devices "
     "0x1c0000000\n"),
    ("object_add memory-backend-ram,id=s1,size=256M", ""),
    ("device_add pc-dimm,id=ds1,memdev=s1,slot=4",
     "Error: invalid slot number 4, valid range is [0-3]\n"),
    ("device_add pc-dimm,id=ds1,memdev=s1,node=1",
     "Error: 'DIMM property node has value 1' which exceeds the number of numa nodes: 1\n"),
    ("device_add pc-dimm,id=ds1,memdev=s1,addr=0x100000",
     "Error: address must be aligned to 0x200000 bytes\n"),
    (f"device_add pc-dimm,id=ds1,memdev=s1,addr=0x{AREA + (1 << 30):x}", ""),
    ("device_add pc-dimm,id=ds1,memdev=s1,slot=0", "Error: Duplicate device ID 'ds1'\n"),
    ("object_add memory-backend-ram,id=d1,size=1G",
     "Error: attempt to add duplicate property 'd1' to object (type 'container')\n"),
    ("device_del nosuch", "Error: Device 'nosuch' not found\n"),
    ("device_del d1", "Error: Device 'd1' not found\n"),
]


def test_12b_errors_byte_for_byte(build: Builder) -> None:
    machine = build(DIMM_MACHINE)
    events = Events(machine)
    plug(machine, events, "dimm1", "d1", "1G")
    for command, expected in ERRORS:
        assert run_hmp(machine, command) == expected, command
    # the explicit address was accepted: that DIMM got slot 1
    assert run_hmp(machine, "info memory-devices") == (
        dimm_text("dimm1", AREA, 0, 1 << 30, "d1")
        + dimm_text("ds1", AREA + (1 << 30), 1, 256 << 20, "s1"))
    assert qmp_error(machine, "device_add", {"driver": "pc-dimm", "id": "dq", "memdev": "u1"}
                     ) == {"class": "GenericError",
                           "desc": "backend memory size must be multiple of 0x200000"}
    assert qmp_error(machine, "object-del", {"id": "d1"}) == {
        "class": "GenericError", "desc": "object 'd1' is in use, can not be deleted"}
    assert run_hmp(machine, "device_del ds1") == ""
    events.wait(lambda e: deleted("ds1") in e and e[-1] == ost(3, 0, 1))
    assert run_hmp(machine, "object_del s1") == ""


def test_12b_slot_exhaustion(build: Builder) -> None:
    machine = build(DIMM_MACHINE)
    events = Events(machine)
    plug(machine, events, "dimm1", "d1", "1G")
    for n in (2, 3, 4):
        plug(machine, events, f"dimm{n}", f"d{n}", "256M")
    assert run_hmp(machine, "object_add memory-backend-ram,id=d5,size=256M") == ""
    assert run_hmp(machine, "device_add pc-dimm,id=dimm5,memdev=d5") == (
        "Error: no free slots available\n")
    assert qmp_error(machine, "device_add", {"driver": "pc-dimm", "id": "dimm5",
                                             "memdev": "d5"}) == {
        "class": "GenericError", "desc": "no free slots available"}
    mib256 = 256 << 20
    assert run_hmp(machine, "info memory-devices") == (
        dimm_text("dimm1", AREA, 0, 1 << 30, "d1")
        + dimm_text("dimm2", AREA + (1 << 30), 1, mib256, "d2")
        + dimm_text("dimm3", AREA + (1 << 30) + mib256, 2, mib256, "d3")
        + dimm_text("dimm4", AREA + (1 << 30) + 2 * mib256, 3, mib256, "d4"))
    assert run_hmp(machine, "info numa") == numa(2816, 1792)
    assert run_hmp(machine, "info memory_size_summary") == (
        "base memory: 1073741824\nplugged memory: 1879048192\n")
    assert qmp(machine, "query-acpi-ospm-status") == [
        {"device": f"dimm{s + 1}", "source": 1, "status": 0, "slot": str(s),
         "slot-type": "DIMM"} for s in range(4)]
    for n in (2, 3, 4):
        before = len(events.hotplug())
        assert run_hmp(machine, f"device_del dimm{n}") == ""
        def three_more(e: list[Any], b: int = before) -> bool:
            return len(e) >= b + 3

        assert events.wait(three_more)[before:] == [
            ost(3, 132, n - 1, f"dimm{n}"), deleted(f"dimm{n}"), ost(3, 0, n - 1)]
        assert run_hmp(machine, f"object_del d{n}") == ""
    assert run_hmp(machine, "object_del d5") == ""


def test_12b_reset_keeps_the_dimm(build: Builder) -> None:
    machine = build(DIMM_MACHINE)
    events = Events(machine)
    plug(machine, events, "dimm1", "d1", "1G")
    before = len(events.got)
    assert run_hmp(machine, "system_reset") == ""
    assert run_hmp(machine, "info memory-devices") == dimm_text("dimm1", AREA, 0, 1 << 30, "d1")
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not memory_blocks(machine, "dimm1"):
        time.sleep(0.02)
    assert memory_blocks(machine, "dimm1") == ["memory16..23: online zones=Movable"]
    assert run_hmp(machine, "info numa") == numa(2048, 1024)
    # only RESET: the guest found the DIMM at boot, with no _OST
    assert [e["event"] for e in events.got[before:]] == ["RESET"]
    assert qmp(machine, "query-acpi-ospm-status")[0] == {
        "device": "dimm1", "source": 1, "status": 0, "slot": "0", "slot-type": "DIMM"}


def _migrate_source(build: Builder, path: Path) -> Machine:
    machine = build(DIMM_MACHINE)
    events = Events(machine)
    plug(machine, events, "dimm1", "d1", "1G")
    assert run_hmp(machine, "guest alloc 64M dimm1").startswith("allocation 1:")
    assert run_hmp(machine, f'migrate "exec:cat > {path}"') == ""
    assert "Migration status: completed" in run_hmp(machine, "info migrate")
    return machine


def test_12b_migration_needs_the_dimm_on_the_destination(build: Builder,
                                                          tmp_path: Path) -> None:
    image = tmp_path / "dimm.img"
    _migrate_source(build, image)
    from monitor.commands import incoming

    without = build([*DIMM_MACHINE, "-incoming", f"exec:cat {image}"], start=False,
                    incoming=True)
    with pytest.raises(MonitorError) as err:
        incoming(context_for(without), f"exec:cat {image}")
    assert err.value.desc == 'Unknown ramblock "d1", cannot accept migration'
    smaller = build([*DIMM_MACHINE, "-object", "memory-backend-ram,id=d1,size=512M",
                     "-device", "pc-dimm,id=dimm1,memdev=d1"],
                    start=False, incoming=True)
    with pytest.raises(MonitorError) as err:
        incoming(context_for(smaller), f"exec:cat {image}")
    assert err.value.desc == "Size mismatch: d1: 0x40000000 != 0x20000000: Invalid argument"

    dest = build([*DIMM_MACHINE, "-object", "memory-backend-ram,id=d1,size=1G",
                  "-device", "pc-dimm,id=dimm1,memdev=d1"],
                 start=False, incoming=True)
    incoming(context_for(dest), f"exec:cat {image}")
    dest.start()
    assert run_hmp(dest, "info status") == "VM status: running\n"
    assert run_hmp(dest, "info memory-devices") == dimm_text("dimm1", AREA, 0, 1 << 30, "d1",
                                                             hotplugged=False)
    assert run_hmp(dest, "guest verify 1") == "verified 16384 pages: 0 bad\n"
    events = Events(dest)
    assert run_hmp(dest, "device_del dimm1") == ""
    assert events.wait(lambda e: len(e) >= 3) == [
        ost(3, 132, 0, "dimm1"), deleted("dimm1"), ost(3, 0, 0)]


def test_12b_vmemlab_run_prints_qemus_three_lines(build: Builder, tmp_path: Path) -> None:
    image = tmp_path / "dimm.img"
    _migrate_source(build, image)
    # the source's machine type (virt): another one would stop at the RAM block's name first
    run = subprocess.run([sys.executable, "-m", "vmemlab", "run", "-accel",
                          "tcg", *DIMM_MACHINE, "-incoming", f"exec:cat {image}",
                          "-monitor", "none", "-nographic"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.endswith(
        'vmemlab: Unknown ramblock "d1", cannot accept migration\n'
        "vmemlab: error while loading state for instance 0x0 of device 'ram'\n"
        "vmemlab: load of migration failed: Invalid argument\n")


# ------------------------------------------------------------------------------ 12c

def test_12c_zone_normal_unplug_refused(build: Builder) -> None:
    machine = build(NORMAL_MACHINE)
    events = Events(machine)
    plug(machine, events, "dimm1", "d1", "1G")
    assert memory_blocks(machine, "dimm1") == ["memory16..23: online zones=Normal"]
    # the transcript's kernel allocations (slab of 3000 tmpfs files): pinned pages in the DIMM
    assert run_hmp(machine, "guest pin 16M dimm1").startswith("allocation 1: 4096 pages")
    assert run_hmp(machine, "device_del dimm1") == ""
    assert events.wait(lambda e: len(e) >= 3) == [
        ost(1, 0, 0, "dimm1"), ost(3, 132, 0, "dimm1"), ost(3, 130, 0, "dimm1")]
    time.sleep(0.3)
    assert all(e[0] != "DEVICE_DELETED" for e in events.hotplug())
    assert qmp(machine, "query-acpi-ospm-status")[0] == {
        "device": "dimm1", "source": 3, "status": 130, "slot": "0", "slot-type": "DIMM"}
    assert run_hmp(machine, "info memory-devices") == dimm_text("dimm1", AREA, 0, 1 << 30, "d1")
    console = "\n".join(machine.console)
    assert "page dumped because: unmovable page" in console
    assert "memory memory16: Offline failed." in console
    # every block is online again, as Linux's acpi_bus_online leaves them
    assert memory_blocks(machine, "dimm1") == ["memory16..23: online zones=Normal"]
    # a second device_del fails the same way while the page is there ...
    assert run_hmp(machine, "device_del dimm1") == ""
    assert events.wait(lambda e: len(e) >= 5)[3:] == [
        ost(3, 132, 0, "dimm1"), ost(3, 130, 0, "dimm1")]
    # ... and succeeds once the guest let go of it (the transcript's slab stayed)
    assert run_hmp(machine, "guest free 1") == "freed 4096 pages\n"
    assert run_hmp(machine, "device_del dimm1") == ""
    assert events.wait(lambda e: len(e) >= 8)[5:] == [
        ost(3, 132, 0, "dimm1"), deleted("dimm1"), ost(3, 0, 0)]


def test_12_unplug_while_the_memory_is_needed_stays_in_progress(build: Builder) -> None:
    """Linux's offline_pages() keeps trying while the pages find no room: OST 132, nothing
    more, no DEVICE_DELETED -- until room appears."""
    machine = build(["-m", "256M,slots=4,maxmem=2G", "-append",
                     "memhp_default_state=online_movable virtio_mem.retry_ms=200"])
    events = Events(machine)
    plug(machine, events, "dimm1", "d1", "512M")
    out = run_hmp(machine, "guest alloc 500M")
    assert out.startswith("allocation 1:"), out
    assert run_hmp(machine, "device_del dimm1") == ""
    events.wait(lambda e: len(e) >= 2)
    time.sleep(1.0)
    assert events.hotplug() == [ost(1, 0, 0, "dimm1"), ost(3, 132, 0, "dimm1")]
    assert "page allocation failure" in "\n".join(machine.console)
    assert json.loads(run_hmp(machine, "qom-get dimm1 size")) == 512 << 20
    assert run_hmp(machine, "guest free 1") == "freed 128000 pages\n"
    assert events.wait(lambda e: deleted("dimm1") in e)[-2:] == [deleted("dimm1"), ost(3, 0, 0)]


# ------------------------------------------------------------------------------ command lines

TRANSCRIPT = Path("/work/shared/reference/qemu-transcripts/12_dimm.txt")


def _transcript_command_lines() -> list[list[str]]:
    import shlex

    if not TRANSCRIPT.exists():
        return []
    lines = []
    for line in TRANSCRIPT.read_text().splitlines():
        if "HOST$ qemu-system-x86_64" in line:
            argv = shlex.split(line.split("HOST$ qemu-system-x86_64", 1)[1])
            lines.append([a.replace("$GOLDEN", "/tmp/vmemlab-golden") for a in argv])
    return lines


COMMAND_LINES = _transcript_command_lines()


@pytest.mark.skipif(not COMMAND_LINES, reason="reference transcripts not available")
@pytest.mark.parametrize("argv", COMMAND_LINES, ids=[str(i) for i in range(len(COMMAND_LINES))])
def test_12_command_lines_are_accepted_or_refused_as_qemu_does(argv: list[str]) -> None:
    """Every QEMU command line of 12_dimm.txt: ``-m 1G,slots=4`` fails as QEMU failed, the
    others start (x86-only options are noted and ignored)."""
    memory = argv[argv.index("-m") + 1]
    if memory == "1G,slots=4":
        with pytest.raises(CmdlineError, match=r"^vmemlab: slots specified but no max-size$"):
            parse_args(argv)
        return
    opts = parse_args(argv)
    assert opts.config.boot_ram == 1 << 30
    layout = opts.config.layout()
    if "-device" in argv:  # the migration destinations: d1 cold-plugged as dimm1
        assert [d.id for d in layout.dimms] == ["dimm1"]
        assert layout.dimms[0].hotplugged is False
