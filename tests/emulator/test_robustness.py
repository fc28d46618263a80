"""A misbehaving guest is recorded and contained: never a Python traceback, never a crash."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator import Machine
from emulator.config import MiB
from emulator.events import RunStateChange, Violation
from tests.conftest import MachineFactory, small_config, wait_settled

QUEUE_NOTIFY = 0x050


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    """One machine for all fuzz examples: each example starts from a system reset."""
    with Machine(small_config()) as m:
        m.start()
        yield m


def _queue_addresses(machine: Machine) -> tuple[int, int, int]:
    state = machine.call(lambda: machine.transports[0].save())
    return state["queue_desc"], state["queue_driver"], state["queue_device"]


def test_garbage_in_the_virtqueue_breaks_the_device_not_the_host(
        make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    desc, avail, _used = _queue_addresses(machine)
    ram = machine.boot_ram

    def corrupt() -> None:
        # every descriptor points far outside guest RAM with an absurd length
        for i in range(8):
            ram.write(desc - ram.gpa + 16 * i, struct.pack("<QIHH", 0xDEAD_0000_0000, 0xFFFF_FFFF,
                                                            1, 0x7FFF))
        (idx,) = struct.unpack_from("<H", ram.read(avail - ram.gpa + 2, 2))
        ram.write(avail - ram.gpa + 2, struct.pack("<H", (idx + 100) & 0xFFFF))

    def corrupt_and_notify() -> None:
        corrupt()  # what a buggy guest driver leaves in its ring before it kicks the device
        machine.transports[0].write(QUEUE_NOTIFY, 4, 0)

    machine.call(corrupt_and_notify)
    assert machine.wait_until(lambda m: m.devices["vm0"].broken, 10)
    broken = [r.event for r in machine.bus.since(0) if r.event.kind == "device_broken"]
    assert broken
    assert machine.runstate == "running"
    assert machine.wait_until(lambda m: m.guest_states["vm0"] == "broken", 10)
    # the rest of the machine keeps working, and a reboot brings the device back
    machine.system_reset()
    wait_settled(machine)
    assert not machine.devices["vm0"].broken
    assert machine.devices["vm0"].plugged_size == 128 * MiB


@settings(max_examples=25, deadline=None)
@given(junk=st.binary(min_size=16, max_size=256), offset=st.integers(0, 15))
def test_random_ring_contents_never_crash_the_host(machine: Machine, junk: bytes,
                                                   offset: int) -> None:
    machine.system_reset()  # every example starts from a freshly booted guest
    wait_settled(machine)
    desc, avail, _used = _queue_addresses(machine)
    ram = machine.boot_ram

    def corrupt_and_notify() -> None:
        ram.write(desc - ram.gpa + offset, junk)
        (idx,) = struct.unpack_from("<H", ram.read(avail - ram.gpa + 2, 2))
        ram.write(avail - ram.gpa + 2, struct.pack("<H", (idx + junk[0] % 4) & 0xFFFF))
        machine.transports[0].write(QUEUE_NOTIFY, 4, 0)

    machine.call(corrupt_and_notify)
    machine.set_requested_size("vm0", 64 * MiB)
    machine.wait_until(lambda m: (m.guest_states["vm0"] in ("idle", "broken")
                       and m.devices["vm0"].plugged_size in (64 * MiB, 128 * MiB))
                       or m.devices["vm0"].broken, 10)
    assert machine.runstate == "running"
    assert not [r for r in machine.bus.since(0) if isinstance(r.event, RunStateChange)
                and r.event.state == "internal-error"]


def test_wild_guest_access_is_a_violation_not_a_crash(make_machine: MachineFactory) -> None:
    machine = make_machine()
    wait_settled(machine)
    from emulator.workload import Workload

    result = Workload(machine).read(0x7_0000_0000)  # nothing is mapped there
    assert result.status == -14
    violation = [r.event for r in machine.bus.since(0) if isinstance(r.event, Violation)][-1]
    assert violation.device is None and violation.reason == "unmapped address"
    assert machine.runstate == "running"
