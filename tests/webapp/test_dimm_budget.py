"""A session's pc-dimms count in the server's memory budget like the rest of its guest."""

from __future__ import annotations

from control import Alloc, control_for
from emulator.config import MachineConfig, MiB
from webapp.sessions import MachineSession


def test_dimm_memory_is_measured_for_the_budget() -> None:
    sess = MachineSession("t", max_recording_bytes=0)
    sess.start_machine(MachineConfig(boot_ram=128 * MiB, maxmem=1024 * MiB, slots=2))
    try:
        machine = sess.machine
        assert machine is not None
        assert machine.wait_until(lambda m: m.guest_booted, 10)
        control = control_for(machine)
        control.dimms.object_add("memory-backend-ram", {"id": "d1", "size": 256 * MiB})
        control.dimms.device_add("pc-dimm", {"id": "dimm1", "memdev": "d1"})
        assert machine.wait_until(
            lambda m: any(r.event.kind == "acpi_device_ost" for r in m.bus.since(0)), 10)
        before = sess.measure()
        control.guest(Alloc(96 * MiB, target="dimm1"))
        after = sess.measure()
        assert sess.dimm_resident >= 96 * MiB
        assert after - before >= 96 * MiB
    finally:
        sess.stop_machine()
