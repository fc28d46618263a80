"""The teaching pace (vmemlab's own control): held requests, driver-step moments, a request
step and "pause after reset", on a real machine running the real guest."""

from __future__ import annotations

import io
import time

import pytest

from control import ControlError, control_for
from emulator.config import MiB
from emulator.machine import Machine
from emulator.states import RunState
from tests.conftest import MachineFactory, wait_settled


def _events(machine: Machine, seq: int, kind: str) -> list:
    return [r for r in machine.bus.since(seq) if r.event.kind == kind]


def _unplug_all(machine: Machine) -> None:
    control_for(machine).resize("vm0", 0)
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 0, 30)
    wait_settled(machine)


def test_full_speed_is_the_default_and_holds_nothing(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    control = control_for(machine)
    assert control.pace().pace_ms == 0 and not control.pace().pause_after_reset
    seq = machine.bus.last_seq
    control.resize("vm0", 256 * MiB)
    wait_settled(machine)
    assert _events(machine, seq, "request") and not _events(machine, seq, "request_held")


def test_a_paced_plug_holds_every_request_in_flight(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    _unplug_all(machine)
    control = control_for(machine)
    control.set_pace(200)
    seq = machine.bus.last_seq
    control.resize("vm0", 512 * MiB)
    # while the first request is held, the device has not answered: nothing is plugged yet
    assert machine.wait_until(lambda m: bool(m.pacer.held()), 10)
    held = control.pace().held[0]
    assert (held.type, held.nb_blocks, held.pace_ms) == ("PLUG", 64, 200)
    assert machine.devices["vm0"].plugged_size == 0
    assert control.unsettled(device="vm0") == ["vm0"]
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 512 * MiB, 30)
    wait_settled(machine)
    helds = _events(machine, seq, "request_held")
    responses = _events(machine, seq, "response")
    assert len(helds) == len(responses) == 4  # four 128 MiB memory blocks, one PLUG each
    for h, r in zip(helds, responses, strict=True):
        assert r.seq > h.seq
        assert r.time_ns - h.time_ns >= 0.19e9  # held for the pace, not a moment less
    # the driver's step ("plugging") held the guest before its first request
    status = _events(machine, seq, "guest_status")
    assert status[0].event.status == "plugging" and status[0].seq < helds[0].seq
    assert helds[0].time_ns - status[0].time_ns >= 0.19e9
    assert control.pace().held == () and machine.vcpu.watchdog_stops == 0


def test_pace_zero_answers_a_held_request_at_once(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    control = control_for(machine)
    control.set_pace(300)
    control.resize("vm0", 256 * MiB)
    assert machine.wait_until(lambda m: bool(m.pacer.held()), 10)
    control.set_pace(0)
    seq = machine.bus.last_seq
    wait_settled(machine, timeout=5)
    assert not _events(machine, seq, "request_held")
    assert machine.devices["vm0"].plugged_size == 256 * MiB


def test_step_request_answers_exactly_one_request(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    _unplug_all(machine)
    control = control_for(machine)
    control.pause()
    control.resize("vm0", 384 * MiB)  # three PLUG requests
    seq = machine.bus.last_seq
    for n in (1, 2):
        control.step_request()

        def stepped(m: Machine, n: int = n) -> bool:
            return (len(_events(m, seq, "response")) == n
                    and m.runstate is RunState.PAUSED and not m.pacer.stepping)

        assert machine.wait_until(stepped, 10)
        time.sleep(0.2)  # paused: nothing more happens
        assert len(_events(machine, seq, "response")) == n
        assert machine.devices["vm0"].plugged_size == n * 128 * MiB
    pauses = [r.event for r in _events(machine, seq, "runstate")
              if r.event.state == "paused"]
    assert [p.reason for p in pauses] == ["step-request", "step-request"]
    control.resume()
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 384 * MiB, 10)


def test_step_request_with_a_pace_waits_out_the_pace(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    control = control_for(machine)
    control.set_pace(150)
    control.pause()
    control.resize("vm0", 256 * MiB)
    seq = machine.bus.last_seq
    control.step_request()
    assert machine.wait_until(lambda m: m.runstate is RunState.PAUSED
                              and len(_events(m, seq, "response")) == 1, 10)
    held, response = _events(machine, seq, "request_held")[0], _events(machine, seq,
                                                                       "response")[0]
    assert response.time_ns - held.time_ns >= 0.14e9


def test_pause_after_reset_keeps_everything_unplugged(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    control = control_for(machine)
    control.set_pace(0, pause_after_reset=True)
    control.reboot()
    assert machine.runstate is RunState.PAUSED
    time.sleep(0.3)
    assert machine.devices["vm0"].plugged_size == 0 and not machine.guest_booted
    control.resume()
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 128 * MiB


@pytest.mark.parametrize("bad", [-1, 10_001])
def test_a_pace_out_of_range_is_refused(make_machine: MachineFactory, bad: int) -> None:
    machine = make_machine()
    with pytest.raises(ControlError, match="pace must be between 0 and 10000 ms"):
        control_for(machine).set_pace(bad)
    assert control_for(machine).pace().pace_ms == 0


def test_a_save_answers_the_held_request_first(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    control = control_for(machine)
    control.set_pace(500)
    control.resize("vm0", 256 * MiB)
    assert machine.wait_until(lambda m: bool(m.pacer.held()), 10)
    control.set_pace(10_000)  # the held request would wait its old 0.5 s; the save is first
    stream = io.BytesIO()
    control.save(stream)
    assert machine.pacer.held() == [] and machine.devices["vm0"].plugged_size == 256 * MiB
