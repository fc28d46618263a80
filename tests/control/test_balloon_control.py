"""The balloon's typed operations (control/balloon.py) on real machines: QEMU's checks and
their order, the kinds front-ends translate, and one "settled" for the balloon."""

from __future__ import annotations

import pytest

from control import BalloonRogue, ControlError, ErrorKind, Pressure, control_for
from emulator.config import BalloonConfig, MachineConfig, MiB
from tests.conftest import MachineFactory, small_config


def with_balloon(**opts: object) -> MachineConfig:
    return small_config(balloon=BalloonConfig(**opts))  # type: ignore[arg-type]


def test_no_balloon_is_not_active_for_every_operation(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine())
    for call in (lambda: ctl.balloon.set_target(0), lambda: ctl.balloon.set_target(MiB),
                 ctl.balloon.query, ctl.balloon.guest_stats,
                 lambda: ctl.balloon.set_poll_interval(-1),
                 lambda: ctl.guest(BalloonRogue(1))):
        with pytest.raises(ControlError) as err:
            call()
        assert err.value.kind is ErrorKind.NOT_ACTIVE
        assert err.value.message == "No balloon device has been activated"
    assert ctl.balloon.settled() and not ctl.balloon.present


def test_target_must_be_a_size_and_is_clamped_to_ram(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine(with_balloon()))
    with pytest.raises(ControlError) as err:
        ctl.balloon.set_target(0)
    assert (err.value.kind, err.value.message) == (ErrorKind.INVALID,
                                                   "Parameter 'target' expects a size")
    with pytest.raises(ControlError):
        ctl.balloon.set_target(-MiB)
    ctl.balloon.set_target(1 << 40)
    assert ctl.balloon.query().target == 64 * MiB  # boot RAM only: virtio-mem does not count


def test_query_and_settled_follow_the_driver(make_machine: MachineFactory) -> None:
    machine = make_machine(with_balloon())
    ctl = control_for(machine)
    assert ctl.wait_settled(10)
    ctl.balloon.set_target(32 * MiB)
    assert "balloon0" in ctl.unsettled() or ctl.balloon.query().actual == 32 * MiB
    assert ctl.wait_settled(10, device="balloon0")
    info = ctl.balloon.query()
    assert (info.actual, info.target, info.balloon_pages) == (32 * MiB, 32 * MiB, 8192)
    assert info.driver_state == "idle" and ctl.unsettled() == []
    machine.system_reset()
    assert "balloon0" in ctl.unsettled()  # the new driver has not caught up yet
    assert ctl.wait_settled(10)
    assert ctl.balloon.query().actual == 32 * MiB


def test_poll_interval_errors_are_invalid_with_qemus_text(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine(with_balloon()))
    for value, text in ((-1, "timer value must be greater than zero"),
                        (5_000_000_000, "timer value is too big")):
        with pytest.raises(ControlError) as err:
            ctl.balloon.set_poll_interval(value)
        assert (err.value.kind, err.value.message) == (ErrorKind.INVALID, text)
    ctl.balloon.set_poll_interval(2)
    assert ctl.balloon.poll_interval() == 2


def test_deflating_asks_the_admission_first(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine(with_balloon()))
    asked: list[int] = []
    ctl.admission = asked.append
    ctl.balloon.set_target(32 * MiB)  # inflating frees memory: nothing to admit
    assert asked == []
    ctl.balloon.set_target(48 * MiB)
    assert asked == [0]

    def refuse(_growth: int) -> None:
        raise ControlError("memory budget exhausted", ErrorKind.EXHAUSTED)

    ctl.admission = refuse
    with pytest.raises(ControlError) as err:
        ctl.balloon.set_target(64 * MiB)
    assert err.value.kind is ErrorKind.EXHAUSTED
    assert ctl.balloon.query().target == 48 * MiB


def test_pressure_with_deflate_on_oom_and_settled_short_of_the_target(
        make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine(small_config(boot_ram=128 * MiB, devices=[],
                                                balloon=BalloonConfig(deflate_on_oom=True))))
    assert ctl.wait_settled(10)
    ctl.balloon.set_target(32 * MiB)
    assert ctl.wait_settled(10)
    outcome = ctl.guest(Pressure(64 * MiB))
    assert outcome.values["pages"] == 16384 and outcome.values["balloon-deflated"] > 0
    assert "deflate-on-oom" in outcome.message
    info = ctl.balloon.query()
    assert info.actual > info.target  # the guest took memory back without asking
    assert ctl.balloon.settled()  # and that is where it stays until the next target


def test_rogue_deflate_outcome(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine(with_balloon()))
    ctl.balloon.set_target(32 * MiB)
    assert ctl.wait_settled(10)
    outcome = ctl.guest(BalloonRogue(100))
    assert outcome.values == {"pages": 100, "bad": 0}
    assert outcome.message.startswith("reused 100 balloon pages")
    with pytest.raises(ControlError) as err:
        ctl.guest(BalloonRogue(0))
    assert err.value.kind is ErrorKind.INVALID
