"""Property-based fuzzing of the DIMM commands: any object_add / device_add / device_del /
object_del / mem-set line, over HMP and QMP, gets QEMU's error or works -- never a traceback,
never a machine that stops working."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator import Machine
from monitor import run_hmp
from monitor.cmdline import parse_args
from monitor.commands import MonitorError, context_for
from monitor.qmp import QMP_COMMANDS, check_arguments

KEYS = st.sampled_from(["id", "memdev", "node", "slot", "addr", "size", "foo", "bus",
                        "driver", "qom-type", "prealloc", ""])
VALUES = st.one_of(st.sampled_from(["d1", "d2", "dimm1", "1G", "256M", "3M", "0", "1", "4",
                                    "-1", "0x100000", "0x140000000", "abc", "", "1e9",
                                    "99999999999999999999999", "pc-dimm", "memory-backend-ram"]),
                   st.text(max_size=10))
OPTS = st.lists(st.tuples(KEYS, VALUES), max_size=5).map(
    lambda kv: ",".join(f"{k}={v}" if k else v for k, v in kv))
LINES = st.tuples(st.sampled_from(["object_add memory-backend-ram,", "object_add ",
                                   "device_add pc-dimm,", "device_add ", "device_del ",
                                   "object_del ", "mem-set "]), OPTS).map("".join)
FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
DIMMS = ["-m", "512M,slots=4,maxmem=4G", "-object", "memory-backend-ram,id=d1,size=256M"]


def _machine() -> Machine:
    machine = Machine(parse_args(DIMMS).config)
    context_for(machine).quit_handler = lambda: None
    machine.start()
    machine.pause()
    return machine


def _close(machine: Machine) -> None:
    context_for(machine).close()
    machine.close()


@FUZZ
@given(lines=st.lists(LINES, min_size=1, max_size=6))
def test_hmp_dimm_lines_never_crash(lines: list[str]) -> None:
    machine = _machine()
    try:
        _hmp_lines(machine, lines)
    finally:
        _close(machine)


def _hmp_lines(machine: Machine, lines: list[str]) -> None:
    for line in lines:
        out = run_hmp(machine, line)
        assert "Traceback" not in out and "internal error" not in out, (line, out)
    assert machine.runstate == "paused"
    assert len(machine.hotplug.dimms) <= 4
    assert run_hmp(machine, "info memory-devices").count("Memory device [dimm]") == len(
        machine.hotplug.dimms)


QMP_ARGS = st.dictionaries(KEYS, st.one_of(VALUES, st.integers(-2, 1 << 65), st.booleans(),
                                           st.none()), max_size=5)


@FUZZ
@given(st.sampled_from(["object-add", "object-del", "device_add", "device_del", "x-mem-set"]),
       QMP_ARGS)
def test_qmp_dimm_commands_never_crash(name: str, args: dict[str, Any]) -> None:
    machine = _machine()
    ctx = context_for(machine)
    spec, fn = QMP_COMMANDS[name]
    try:
        check_arguments(spec, args)
        ctx.run(lambda: fn(ctx, dict(args)))
    except MonitorError as err:
        assert err.cls in ("GenericError", "DeviceNotFound", "CommandNotFound"), err.desc
        assert "internal error" not in err.desc, err.desc
    finally:
        assert machine.runstate == "paused"
        _close(machine)
