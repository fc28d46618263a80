"""Ids are identifiers as QEMU defines them, on every path that names a device or machine.

Before the fix ``-device virtio-mem-pci,id=<img/src/onerror=alert(1)>`` was accepted on a
command line (and so in a scenario's ``machine:``), and a recording header could name
machines and devices with any text; both end up in pages and file names.
"""

from __future__ import annotations

import io
import json

import pytest

from emulator import MachineConfig, MemoryDeviceConfig
from emulator.config import ID_HINT, id_wellformed
from monitor.cmdline import CmdlineError, parse_args
from scenarios import ScenarioError, parse_scenario
from scenarios.recording import Recording, RecordingError
from tests.security.measure import vmemlab

HOSTILE = "<img/src/onerror=alert(1)>"
BASE = ["-m", "1G,maxmem=4G", "-object", "memory-backend-ram,id=m0,size=1G"]


@pytest.mark.parametrize(("text", "ok"), [
    ("vm0", True), ("a", True), ("A-b.c_d9", True), ("", False), ("0vm", False),
    ("-x", False), ("vm 0", False), (HOSTILE, False), ("vm/0", False), ("vmé", False),
    ("é", False), ("vm0\n", False),
])
def test_id_wellformed_is_qemus(text: str, ok: bool) -> None:
    assert id_wellformed(text) is ok


@pytest.mark.parametrize("argv", [
    [*BASE, "-device", f"virtio-mem-pci,id={HOSTILE},memdev=m0"],
    ["-m", "1G,maxmem=4G", "-object", f"memory-backend-ram,id={HOSTILE},size=1G"],
    [*BASE, "-device", "virtio-mem-pci,id=,memdev=m0"],
    [*BASE, "-device", "virtio-mem-pci,id=9lives,memdev=m0"],
    [*BASE, "-chardev", f"socket,id={HOSTILE},path=/tmp/x.sock"],
])
def test_command_line_ids_are_checked_with_qemus_text(argv: list[str]) -> None:
    with pytest.raises(CmdlineError) as info:
        parse_args(argv)
    assert info.value.message == "Parameter 'id' expects an identifier"
    assert info.value.hint == ID_HINT
    assert info.value.option is not None and info.value.option.startswith(argv[-2])


def test_vmemlab_run_prints_the_error_and_qemus_hint() -> None:
    option = f"virtio-mem-pci,id={HOSTILE},memdev=m0"
    proc = vmemlab(["run", *BASE, "-device", option], timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == (f"vmemlab: -device {option}: Parameter 'id' expects an identifier\n"
                           "Identifiers consist of letters, digits, '-', '.', '_', starting "
                           "with a letter.\n")


def test_scenario_machine_lines_are_checked_too() -> None:
    text = ("title: t\nsteps: [{say: hi}]\nmachine: >-\n  -m 1G,maxmem=4G -object "
            f"memory-backend-ram,id=m0,size=1G -device virtio-mem-pci,id={HOSTILE},"
            "memdev=m0\n")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "up.yaml")
    assert str(info.value).startswith("up.yaml:3: machine 'main': vmemlab: -device ")
    assert str(info.value).endswith("Parameter 'id' expects an identifier")


def test_every_machine_config_is_checked_by_layout() -> None:
    from device.errors import ConfigError

    for dev in (MemoryDeviceConfig(id=HOSTILE, size=1 << 30),
                MemoryDeviceConfig(id="vm0", memdev=HOSTILE, size=1 << 30)):
        with pytest.raises(ConfigError, match="Parameter 'id' expects an identifier"):
            MachineConfig(maxmem=8 << 30, devices=[dev]).layout()


def header(machines: dict[str, object]) -> str:
    return json.dumps({"type": "header", "format": "vmemlab-recording", "version": 1,
                       "title": "t", "machines": machines}) + "\n"


GOOD_MACHINE = {"argv": None, "config": {"devices": [{"id": "vm0", "memdev": "mem0"}]}}


@pytest.mark.parametrize("text", [
    header({HOSTILE: GOOD_MACHINE}),
    header({"main": {"argv": None, "config": {"devices": [{"id": HOSTILE}]}}}),
    header({"main": {"argv": None, "config": {"devices": [{"id": "vm0", "memdev": HOSTILE}]}}}),
    header({"main": GOOD_MACHINE}) + json.dumps(
        {"t": 0, "type": "keyframe", "machine": HOSTILE, "state": {"seq": 0, "devices": {}}}),
    header({"main": GOOD_MACHINE}) + json.dumps(
        {"t": 0, "type": "keyframe", "machine": "main",
         "state": {"seq": 0, "devices": {HOSTILE: {}}}}),
    header({"main": GOOD_MACHINE}) + json.dumps(
        {"t": 0, "type": "event", "machine": HOSTILE, "event": {"kind": "x", "seq": 1}}),
])
def test_recording_names_and_ids_are_identifiers(text: str) -> None:
    with pytest.raises(RecordingError, match="expects an identifier") as info:
        Recording.parse(io.StringIO(text))
    assert HOSTILE not in str(info.value)  # the hostile text is not echoed back
