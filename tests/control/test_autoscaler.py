"""The experimental host-side autoscaler (control/autoscaler.py): its hysteresis as a pure
function, and on the real guest: it grows when the guest runs short, shrinks when memory is
free again, holds in between, acts only once the driver caught up, and says why."""

from __future__ import annotations

import pytest

from control import ControlError, control_for
from control.autoscaler import AutoscaleDecision, AutoscalePolicy, decide
from emulator.config import MiB
from monitor.hmp import run_hmp
from tests.conftest import MachineFactory, small_config, wait_settled

BS = 2 * MiB
POLICY = AutoscalePolicy(low=96 * MiB, high=288 * MiB, step=64 * MiB)


@pytest.mark.parametrize("free, requested, expect", [
    (50 * MiB, 128 * MiB, ("grow", 192 * MiB)),
    (100 * MiB, 128 * MiB, ("hold", 128 * MiB)),  # inside the band: no flapping
    (280 * MiB, 128 * MiB, ("hold", 128 * MiB)),
    (300 * MiB, 128 * MiB, ("shrink", 64 * MiB)),
    (300 * MiB, 32 * MiB, ("shrink", 0)),
    (0, 500 * MiB, ("grow", 512 * MiB)),  # clipped to the region
    (0, 512 * MiB, ("hold", 512 * MiB)),
])
def test_decide_has_a_hysteresis_band(free: int, requested: int,
                                      expect: tuple[str, int]) -> None:
    assert decide(free, requested, 512 * MiB, BS, POLICY)[:2] == expect


def test_max_and_min_bound_the_decisions() -> None:
    bounded = AutoscalePolicy(low=96 * MiB, high=288 * MiB, step=64 * MiB,
                              min_size=64 * MiB, max_size=160 * MiB)
    assert decide(0, 128 * MiB, 512 * MiB, BS, bounded)[:2] == ("grow", 160 * MiB)
    assert decide(400 * MiB, 96 * MiB, 512 * MiB, BS, bounded)[:2] == ("shrink", 64 * MiB)
    assert decide(400 * MiB, 64 * MiB, 512 * MiB, BS, bounded)[0] == "hold"


def test_bad_policies_are_refused(make_machine: MachineFactory) -> None:
    machine = make_machine()
    ctl = control_for(machine)
    with pytest.raises(ControlError, match="multiple of 'block-size'"):
        ctl.autoscale.enable("vm0", AutoscalePolicy(0, 64 * MiB, 3 * MiB), start=False)
    with pytest.raises(ControlError, match="'low' has to be below 'high'"):
        ctl.autoscale.enable("vm0", AutoscalePolicy(64 * MiB, 64 * MiB, BS), start=False)
    with pytest.raises(ControlError, match="Device 'nope' not found"):
        ctl.autoscale.enable("nope", POLICY, start=False)


def test_it_follows_the_guest_up_and_down(make_machine: MachineFactory) -> None:
    cfg = small_config(boot_ram=128 * MiB)
    cfg.devices[0].size = 1024 * MiB
    machine = make_machine(cfg)
    wait_settled(machine)
    ctl = control_for(machine)
    scaler = ctl.autoscale.enable("vm0", POLICY, start=False)  # looks driven by the test
    assert scaler.look() is None  # ~250 MiB free: inside the band
    run_hmp(machine, "guest alloc 180M")
    seq = machine.bus.last_seq
    grow = scaler.look()
    assert grow is not None and (grow.action, grow.old, grow.new) == ("grow", 128 * MiB,
                                                                       192 * MiB)
    assert grow.source == "guest-report" and grow.free < POLICY.low
    assert any(isinstance(r.event, AutoscaleDecision) for r in machine.bus.since(seq))
    wait_settled(machine)
    run_hmp(machine, "guest free 1")
    shrink = scaler.look()
    assert shrink is not None and (shrink.action, shrink.new) == ("shrink", 128 * MiB)
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 128 * MiB
    assert "shrink 192 MiB -> 128 MiB" in run_hmp(machine, "info virtio-mem-autoscale vm0")


def test_it_waits_for_the_driver_before_deciding_again(make_machine: MachineFactory) -> None:
    machine = make_machine(small_config(boot_ram=128 * MiB))
    wait_settled(machine)
    ctl = control_for(machine)
    scaler = ctl.autoscale.enable("vm0", POLICY, start=False)
    run_hmp(machine, "guest alloc 180M")
    machine.pause()  # the driver cannot carry out the decision
    assert scaler.look() is not None
    assert scaler.look() is None  # not settled: no second decision on stale statistics
    machine.resume()


def test_the_thread_runs_and_stops(make_machine: MachineFactory) -> None:
    machine = make_machine(small_config(boot_ram=128 * MiB))
    wait_settled(machine)
    ctl = control_for(machine)
    run_hmp(machine, "guest alloc 180M")
    ctl.autoscale.enable("vm0", AutoscalePolicy(96 * MiB, 288 * MiB, 64 * MiB, interval=0.05))
    assert machine.wait_until(lambda m: m.devices["vm0"].requested_size == 192 * MiB, 20)
    assert ctl.autoscale.disable("vm0") and not ctl.autoscale.info("vm0")["enabled"]
