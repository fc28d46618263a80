"""HMP ``pace`` and QMP ``x-vmemlab-pace`` / ``x-vmemlab-step-request``: vmemlab's teaching
pace, labelled as ours, on a real machine."""

from __future__ import annotations

from emulator import Machine
from emulator.states import RunState
from monitor.hmp import run_hmp
from tests.monitor.conftest import Builder, wait_settled
from tests.monitor.test_balloon_transcripts import qmp


def test_hmp_pace_shows_sets_and_refuses(build: Builder) -> None:
    machine = build()
    assert run_hmp(machine, "pace").startswith("teaching pace (vmemlab, not QEMU): full speed")
    assert run_hmp(machine, "pace 200 pause-after-reset=on") == ""
    shown = run_hmp(machine, "pace")
    assert "200 ms per request" in shown and "pause after reset: on" in shown
    assert machine.pacer.pace_ms == 200 and machine.pacer.pause_after_reset
    assert run_hmp(machine, "pace 10001") == "Error: pace must be between 0 and 10000 ms\n"
    assert run_hmp(machine, "pace fast").startswith("Error: pace: 'fast' is not a number")
    assert run_hmp(machine, "pace 1 x=y").startswith("Error: pace: unknown option 'x=y'")
    assert run_hmp(machine, "pace 0 pause-after-reset=off") == ""
    assert machine.pacer.pace_ms == 0 and not machine.pacer.pause_after_reset
    assert "(vmemlab, not QEMU)" in run_hmp(machine, "help pace")


def test_hmp_pace_shows_the_request_in_flight(build: Builder) -> None:
    machine = build()
    run_hmp(machine, "pace 2000")
    run_hmp(machine, "qom-set vm0 requested-size 640M")
    assert machine.wait_until(lambda m: bool(m.pacer.held()), 10)
    assert "in flight: vm0 PLUG 0x" in run_hmp(machine, "pace")
    run_hmp(machine, "pace 0")
    wait_settled(machine)


def test_hmp_pace_step_answers_one_request(build: Builder) -> None:
    machine = build()
    run_hmp(machine, "stop")
    run_hmp(machine, "qom-set vm0 requested-size 768M")  # two PLUG requests of 128 MiB
    seq = machine.bus.last_seq
    assert run_hmp(machine, "pace step") == ""
    assert machine.wait_until(lambda m: m.runstate is RunState.PAUSED and not m.pacer.stepping
                              and any(r.event.kind == "response" for r in m.bus.since(seq)),
                              10)
    assert sum(r.event.kind == "response" for r in machine.bus.since(seq)) == 1
    assert "paused" in run_hmp(machine, "info status")


def _answered(machine: Machine) -> int:
    return machine.pacer.answered


def test_qmp_pace_and_step_request(build: Builder) -> None:
    machine = build()
    got = qmp(machine, "x-vmemlab-pace", {"pace-ms": 150, "pause-after-reset": True})
    assert got["return"] == {"pace-ms": 150, "pause-after-reset": True, "stepping": False,
                             "answered": 0, "in-flight": []}
    assert qmp(machine, "x-vmemlab-pace")["return"]["pace-ms"] == 150  # no arguments: query
    bad = qmp(machine, "x-vmemlab-pace", {"pace-ms": "fast"})
    assert bad["error"]["class"] == "GenericError"
    assert qmp(machine, "x-vmemlab-pace", {"pace-ms": -5})["error"]["desc"] == (
        "pace must be between 0 and 10000 ms")
    assert "x-vmemlab-pace" in [c["name"] for c in qmp(machine, "query-commands")["return"]]
    qmp(machine, "stop")
    qmp(machine, "qom-set", {"path": "vm0", "property": "requested-size",
                             "value": 640 << 20})
    assert qmp(machine, "x-vmemlab-step-request") == {"return": {}, "id": "c1"}
    assert machine.wait_until(lambda m: _answered(m) == 1 and m.runstate is RunState.PAUSED,
                              10)
    qmp(machine, "cont")
    qmp(machine, "system_reset")  # pause after reset: stays paused, all unplugged
    assert machine.runstate is RunState.PAUSED
    assert machine.devices["vm0"].plugged_size == 0
