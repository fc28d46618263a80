"""The experimental extensions end to end, on the real guest image (docs/extensions.md):
the guest's requests on the x-host-request queue under each policy, and S3 suspend/resume
with and without VIRTIO_MEM_F_PERSISTENT_SUSPEND."""

from __future__ import annotations

import threading

import pytest

from control import ControlError, control_for
from device.events import GuestMemRequest
from emulator.config import MiB
from emulator.machine import Machine
from monitor.hmp import run_hmp
from monitor.qmp_events import EventTranslator
from tests.conftest import MachineFactory, small_config, wait_settled


def _request_machine(make_machine: MachineFactory) -> Machine:
    cfg = small_config()
    cfg.devices[0].guest_requests = True
    cfg.devices[0].requested_size = 0
    machine = make_machine(cfg)
    wait_settled(machine)
    return machine


def test_deny_policy_the_guest_asks_once_and_stops(make_machine: MachineFactory) -> None:
    machine = _request_machine(make_machine)
    ctl = control_for(machine)
    res = ctl.requests.grow(16 * MiB)
    assert (res.requests, res.granted, res.denied) == (1, 0, 1)
    assert machine.devices["vm0"].requested_size == 0
    assert any("host denied 0x1000000 bytes on node 0" in line for line in machine.console)
    assert machine.vcpu.watchdog_stops == 0


def test_cap_policy_grows_through_the_plug_path(make_machine: MachineFactory) -> None:
    machine = _request_machine(make_machine)
    ctl = control_for(machine)
    ctl.requests.set_policy("vm0", "cap", cap=128 * MiB)
    seq = machine.bus.last_seq
    res = ctl.requests.grow(16 * MiB)
    assert res.granted == 8 and res.denied == 1
    dev = machine.devices["vm0"]
    assert dev.requested_size == dev.plugged_size == 128 * MiB
    kinds = [r.event.kind for r in machine.bus.since(seq)]
    assert "request" in kinds  # PLUG requests on the ordinary queue
    info = ctl.requests.info("vm0")
    assert info["requests"][-1]["note"] == "cap 0x8000000 reached"
    qmp = EventTranslator(machine).translate(
        next(r for r in machine.bus.since(seq) if isinstance(r.event, GuestMemRequest)))
    name, data = qmp[0]
    assert name == "X_VIRTIO_MEM_GUEST_REQUEST" and data is not None
    assert data["decision"] == "granted" and data["reason"] == "grow: alloc of 16 MiB failed"
    assert machine.vcpu.watchdog_stops == 0


def test_ask_policy_waits_for_the_presenter(make_machine: MachineFactory) -> None:
    machine = _request_machine(make_machine)
    ctl = control_for(machine)
    ctl.requests.set_policy("vm0", "ask")
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(ctl.requests.grow(16 * MiB)))
    worker.start()
    assert machine.wait_until(lambda m: ctl.requests.info("vm0")["pending"] is not None, 30)
    assert "waiting for the presenter" in run_hmp(machine, "info virtio-mem-requests vm0")
    ctl.requests.answer("vm0", True)
    assert machine.wait_until(lambda m: ctl.requests.info("vm0")["pending"] is not None
                              and ctl.requests.info("vm0")["pending"]["seq"] == 2, 30)
    ctl.requests.answer("vm0", False)
    worker.join(30)
    res = results[0]
    assert (res.granted, res.denied) == (1, 1)  # type: ignore[attr-defined]
    assert machine.devices["vm0"].plugged_size == 16 * MiB


def test_rate_policy_and_monitor_texts(make_machine: MachineFactory) -> None:
    machine = _request_machine(make_machine)
    out = run_hmp(machine, "x-virtio-mem-request-policy vm0 rate 32M 600")
    assert out == "policy: rate (at most 32 MiB per 600 s)\n"
    assert "2 granted, 1 denied" in run_hmp(machine, "guest grow 16M")
    assert "(rate limit)" in run_hmp(machine, "info virtio-mem-requests vm0")
    assert run_hmp(machine, "x-virtio-mem-request-policy vm0 cap 3M").startswith(
        "Error: 'cap' has to be multiples of 'block-size' (0x200000)")


def test_no_queue_without_the_property(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    with pytest.raises(ControlError, match="has no guest request queue"):
        control_for(machine).requests.info("vm0")


def test_suspend_is_refused_without_persistent_suspend(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    with pytest.raises(ControlError, match="suspending with plugged memory is not supported"):
        control_for(machine).power.suspend()
    assert machine.runstate == "running"
    assert any("virtio_mem virtio0: suspending with plugged memory is not supported" in line
               for line in machine.console)
    assert run_hmp(machine, "system_wakeup") == (
        "Error: Unable to wake up: guest is not in suspended state\n")


def test_suspend_with_nothing_plugged_is_allowed_without_the_feature(
        make_machine: MachineFactory) -> None:
    cfg = small_config()
    cfg.devices[0].requested_size = 0
    machine = make_machine(cfg)
    wait_settled(machine)
    control_for(machine).power.suspend()
    assert machine.runstate == "suspended"
    control_for(machine).power.wakeup()
    assert machine.wait_until(lambda m: any("PM: suspend exit" in ln for ln in m.console), 10)


def test_persistent_suspend_keeps_the_blocks_across_wakeup(make_machine: MachineFactory) -> None:
    machine = make_machine(small_config(persistent_suspend=True))
    wait_settled(machine)
    qmp = EventTranslator(machine)
    events: list[str] = []
    qmp.add_sink(lambda msg: events.append(msg["event"]))
    ctl = control_for(machine)
    ctl.power.suspend()
    assert machine.runstate == "suspended"
    assert run_hmp(machine, "info status") == "VM status: paused (suspended)\n"
    assert machine.devices["vm0"].plugged_size == 128 * MiB
    assert machine.devices["vm0"].driver_features == 0  # frozen: the driver reset it
    run_hmp(machine, "system_wakeup")
    assert machine.wait_until(lambda m: any("PM: suspend exit" in ln for ln in m.console), 10)
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 128 * MiB
    assert machine.devices["vm0"].driver_features >> 2 & 1  # negotiated again on restore
    ctl.resize("vm0", 192 * MiB)
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 192 * MiB
    qmp.close()
    assert events[:2] == ["SUSPEND", "WAKEUP"]
    assert machine.vcpu.watchdog_stops == 0


def test_the_teaching_pace_holds_plug_requests_not_the_guests_requests(
        make_machine: MachineFactory) -> None:
    """The pace holds virtio-mem's request queue (PLUG/UNPLUG/...): the guest → host queue is
    answered by the policy at once, and never read as if it held a PLUG request."""
    from emulator.pacing import RequestHeld

    machine = _request_machine(make_machine)
    ctl = control_for(machine)
    ctl.requests.set_policy("vm0", "cap", cap=32 * MiB)
    ctl.set_pace(50)
    seq = machine.bus.last_seq
    res = ctl.requests.grow(16 * MiB)
    assert res.granted == 2 and res.denied == 1
    assert ctl.wait_settled(device="vm0")
    held = [r.event for r in machine.bus.since(seq) if isinstance(r.event, RequestHeld)]
    dev = machine.devices["vm0"]
    assert held and all(h.type == "PLUG" and dev.addr <= h.addr < dev.addr + dev.region_size
                        for h in held), held
    assert machine.devices["vm0"].plugged_size == 32 * MiB
    assert machine.vcpu.watchdog_stops == 0
