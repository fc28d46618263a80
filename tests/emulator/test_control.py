"""Pause, resume and stop from other threads; commands queue while paused."""

from __future__ import annotations

import time

from emulator import Machine
from emulator.config import MiB
from tests.conftest import MachineFactory, wait_settled


def test_pause_stops_the_guest_and_resume_continues(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    machine.pause()
    assert machine.runstate == "paused"
    future = machine.submit_command("alloc", 4 * MiB, 0xFF << 8, 1)
    machine.set_requested_size("vm0", 256 * MiB)
    time.sleep(0.2)
    assert not future.done()  # the guest is not running
    assert machine.devices["vm0"].plugged_size == 128 * MiB
    machine.resume()
    assert future.result(10).ok
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 256 * MiB


def test_close_is_quick_and_idempotent(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    start = time.monotonic()
    machine.close()
    assert time.monotonic() - start < 5
    assert machine.closed and not machine.vcpu.alive


def test_single_step_moves_a_paused_guest_by_instructions(make_machine: MachineFactory) -> None:
    from emulator.machine import MachineError

    machine = make_machine()
    wait_settled(machine)
    machine.pause()
    future = machine.submit_command("stats")  # gives the idle guest something to do
    first = machine.step(1)
    pcs = [machine.step(1) for _ in range(20)]
    assert len(set([first, *pcs])) > 5  # it walks through code, one instruction at a time
    assert machine.runstate == "paused"
    machine.resume()
    assert future.result(10).ok
    import pytest

    with pytest.raises(MachineError):
        machine.step(1)  # only while paused


def test_slowed_down_guest_still_converges(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    machine.set_speed(0.2)
    start = time.monotonic()
    machine.set_requested_size("vm0", 256 * MiB)
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 256 * MiB
    machine.set_speed(1.0)
    assert time.monotonic() - start < 20


def test_a_closed_machine_refuses_calls_cleanly(make_machine: MachineFactory) -> None:
    import pytest

    from emulator.machine import MachineError

    machine = make_machine()
    wait_settled(machine)
    machine.close()
    for call in (machine.snapshot, lambda: machine.set_requested_size("vm0", 0),
                 lambda: machine.read_memory(0x40000000, 8)):
        with pytest.raises(MachineError, match="closed"):
            call()


def test_reset_while_paused_waits_in_prelaunch_like_qemu(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    machine.pause()
    machine.system_reset()
    assert machine.runstate == "prelaunch"
    assert machine.devices["vm0"].plugged_size == 0
    machine.resume()
    wait_settled(machine)
    assert machine.runstate == "running"


def test_start_paused_runs_nothing_until_resumed(make_machine: MachineFactory) -> None:
    machine = make_machine(start=False)
    machine.start(paused=True)
    time.sleep(0.2)
    assert machine.runstate == "prelaunch" and not machine.guest_booted
    machine.set_requested_size("vm0", 64 * MiB)  # calls work while it waits
    machine.resume()
    wait_settled(machine)
    assert machine.devices["vm0"].plugged_size == 64 * MiB


def test_calls_from_other_threads_never_corrupt_the_guest(make_machine: MachineFactory) -> None:
    """A stream of calls while the guest boots and plugs: no replayed instructions, no panic.

    (Stopping the vCPU with emu_stop() from another thread at an arbitrary moment made Unicorn
    leave mid-block with a stale PC; 21 of 40 boots went wrong this way.)
    """
    import threading

    for _ in range(8):
        machine = make_machine()
        done = threading.Event()

        def hammer(m: Machine = machine, done: threading.Event = done) -> None:
            while not done.is_set():
                m.call(lambda: None, timeout=5)
                time.sleep(0.0003)

        thread = threading.Thread(target=hammer)
        thread.start()
        try:
            wait_settled(machine, timeout=10)
            machine.set_requested_size("vm0", 384 * MiB)
            wait_settled(machine, timeout=10)
        finally:
            done.set()
            thread.join()
        assert machine.runstate == "running"
        assert not [line for line in machine.console if "Oops" in line or "panic" in line]
        machine.close()
