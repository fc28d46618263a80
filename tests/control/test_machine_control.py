"""The control layer on real machines: typed operations, error kinds, one "settled"."""

from __future__ import annotations

import io

import pytest

from control import (
    Alloc,
    ControlError,
    DriverState,
    ErrorKind,
    Free,
    RogueWrite,
    RunState,
    Verify,
    control_for,
)
from control.boot_options import ADOPT, NO_DRIVER, driver_cmdline, with_option
from control.settle import device_settled
from emulator.config import MiB
from emulator.events import Reset
from tests.conftest import MachineFactory, small_config


def test_one_control_per_machine(make_machine: MachineFactory) -> None:
    machine = make_machine()
    assert control_for(machine) is control_for(machine)


def test_resize_errors_carry_a_kind_and_qemus_text(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine())
    with pytest.raises(ControlError) as err:
        ctl.resize("vm9", 256 * MiB)
    assert err.value.kind is ErrorKind.NOT_FOUND
    assert err.value.message == "Device 'vm9' not found"
    with pytest.raises(ControlError) as err:
        ctl.resize("vm0", 3 * MiB)
    assert err.value.kind is ErrorKind.INVALID
    assert err.value.message == "'requested-size' has to be multiples of 'block-size' (0x200000)"


def test_guest_ops_report_the_guests_numbers(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine())
    assert ctl.wait_settled(30)
    alloc = ctl.guest(Alloc(8 * MiB, target="vm0"))
    assert alloc.values["pages"] == 2048 and alloc.values["unmovable"] is False
    assert alloc.message == f"allocation {alloc.values['id']}: 2048 pages (8 MiB) movable"
    verify = ctl.guest(Verify(alloc.values["id"]))
    assert verify.to_dict() == {"command": "verify", "id": alloc.values["id"], "bad": 0,
                                "checked": 2048}
    freed = ctl.guest(Free(alloc.values["id"]))
    assert freed.values["pages"] == 2048


def test_a_failed_guest_op_is_a_failed_kind(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine())
    assert ctl.wait_settled(30)
    with pytest.raises(ControlError) as err:
        ctl.guest(Free(999))
    assert err.value.kind is ErrorKind.FAILED
    assert err.value.message == "guest free failed: ENOENT"
    with pytest.raises(ControlError) as err:
        ctl.guest(RogueWrite(device="nope"))
    assert err.value.kind is ErrorKind.NOT_FOUND


def test_guest_ops_are_refused_while_paused(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine())
    ctl.pause()
    with pytest.raises(ControlError) as err:
        ctl.guest(Alloc(MiB))
    assert err.value.kind is ErrorKind.REFUSED
    assert "VM status: paused" in err.value.message


def test_stopped_short_counts_only_as_an_answer_to_the_latest_change(
        make_machine: MachineFactory) -> None:
    # memhp_default_state=online: the device's memory is ZONE_NORMAL and takes pinned pages
    machine = make_machine(small_config(
        cmdline="memhp_default_state=online virtio_mem.retry_ms=60000"))
    ctl = control_for(machine)
    assert ctl.wait_settled(30)
    ctl.guest(Alloc(6 * MiB, unmovable=True, target="vm0"))
    ctl.resize("vm0", 0)
    assert ctl.wait_settled(30)
    snap = ctl.snapshot()
    dev = snap.device("vm0")
    assert dev.driver_state == DriverState.STOPPED_SHORT and dev.plugged_size > 0
    # the same state, read before the driver saw the next change, is not an answer to it
    with machine.device_lock:  # no guest reaction can slip in between these two lines
        ctl.resize("vm0", 2 * MiB)
        assert not ctl.watch.answered("vm0")
    assert device_settled(dev, answered=True)
    assert not device_settled(dev, answered=False)


def test_disabled_driver_is_settled_whatever_the_host_asks(make_machine: MachineFactory) -> None:
    machine = make_machine(small_config(cmdline=NO_DRIVER))
    ctl = control_for(machine)
    assert machine.wait_until(lambda m: m.guest_states["vm0"] == DriverState.DISABLED, 10)
    ctl.resize("vm0", 256 * MiB)
    assert ctl.settled()  # nobody will ever answer: nothing to wait for
    assert ctl.snapshot().device("vm0").plugged_size == 0


def test_reboot_switches_the_driver_and_keeps_other_options(make_machine: MachineFactory) -> None:
    machine = make_machine(small_config(cmdline=f"virtio_mem.retry_ms=50 {ADOPT}"))
    ctl = control_for(machine)
    assert ctl.reboot(driver=False) == f"virtio_mem.retry_ms=50 {ADOPT} {NO_DRIVER}"
    assert machine.wait_until(lambda m: m.guest_states["vm0"] == DriverState.DISABLED, 10)
    assert ctl.reboot(driver=True) == f"virtio_mem.retry_ms=50 {ADOPT}"
    assert ctl.wait_settled(30)
    assert ctl.snapshot().device("vm0").plugged_size == 128 * MiB


def test_boot_option_helpers() -> None:
    assert with_option("a b", "b", True) == "a b"
    assert with_option("b a", "b", True) == "a b"
    assert with_option("a b c", "b", False) == "a c"
    assert driver_cmdline("", False) == NO_DRIVER
    assert driver_cmdline(NO_DRIVER, True) == ""


def test_guest_reboot_waits_for_the_reset(make_machine: MachineFactory) -> None:
    machine = make_machine()
    ctl = control_for(machine)
    assert ctl.wait_settled(30)
    seq = machine.bus.last_seq
    ctl.reboot(by_guest=True)
    resets = [r.event for r in machine.bus.since(seq) if isinstance(r.event, Reset)]
    assert resets and resets[0].guest is True


def test_resume_refusals_are_qemus(make_machine: MachineFactory) -> None:
    machine = make_machine(incoming=True, start=False)
    ctl = control_for(machine)
    with pytest.raises(ControlError) as err:
        ctl.resume()
    assert (err.value.kind, err.value.message) == (ErrorKind.BUSY,
                                                   "Migration is not finished yet")


def test_migrate_moves_the_guest_and_its_data(make_machine: MachineFactory) -> None:
    source = make_machine()
    ctl = control_for(source)
    assert ctl.wait_settled(30)
    alloc = ctl.guest(Alloc(4 * MiB, target="vm0"))
    dest = ctl.migrate()
    try:
        assert source.runstate is RunState.POSTMIGRATE
        assert dest.runstate is RunState.RUNNING
        after = control_for(dest).guest(Verify(alloc.values["id"]))
        assert after.values == {"id": alloc.values["id"], "bad": 0, "checked": 1024}
    finally:
        dest.close()


def test_a_failed_migration_leaves_the_source_running(make_machine: MachineFactory) -> None:
    source = make_machine()
    ctl = control_for(source)
    assert ctl.wait_settled(30)
    other = small_config()
    other.devices[0].size = 256 * MiB
    with pytest.raises(ControlError) as err:
        ctl.migrate(other)
    assert err.value.kind is ErrorKind.INVALID
    assert "Size mismatch" in err.value.message
    assert source.runstate is RunState.RUNNING


def test_save_returns_the_bytes_of_ram_sent(make_machine: MachineFactory) -> None:
    ctl = control_for(make_machine())
    assert ctl.wait_settled(30)
    sent = ctl.save(io.BytesIO())
    assert sent > 0 and sent == ctl.machine.last_migration_bytes
