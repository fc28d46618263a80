"""DIMM hot(un)plug on a real machine with the real guest: Linux 6.1's behaviour
(drivers/acpi/acpi_memhotplug.c, scan.c's eject path, mm/memory_hotplug.c) and a host
interface that no guest access can break."""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control import control_for
from emulator import Machine
from emulator.config import BackendConfig, DimmConfig, MachineConfig, MiB
from tests.conftest import MachineFactory

GiB = 1 << 30


def dimm_machine(cmdline: str = "memhp_default_state=online_movable", **kw: object
                 ) -> MachineConfig:
    cfg = MachineConfig(boot_ram=256 * MiB, maxmem=2 * GiB, slots=4, cmdline=cmdline)
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


def plug(machine: Machine, dev: str = "dimm1", size: int = 512 * MiB) -> None:
    dimms = control_for(machine).dimms
    dimms.object_add("memory-backend-ram", {"id": f"m-{dev}", "size": size})
    dimms.device_add("pc-dimm", {"id": dev, "memdev": f"m-{dev}"})


def guest_dimm(machine: Machine, slot: int = 0, state: str = "added",
               timeout: float = 10.0) -> object:
    def seen(m: Machine) -> bool:
        view = m.snapshot().guest
        d = view.dimm(slot) if view else None
        return d is not None and d.state == state
    assert machine.wait_until(seen, timeout), list(machine.console)[-10:]
    view = machine.snapshot().guest
    assert view is not None
    return view.dimm(slot)


def ost_statuses(machine: Machine) -> list[tuple[int, int]]:
    return [(r.event.info["source"], r.event.info["status"])  # type: ignore[attr-defined]
            for r in machine.bus.since(0) if r.event.kind == "acpi_device_ost"]


def test_online_movable_and_the_memory_map_cost(make_machine: MachineFactory) -> None:
    """add_memory() allocates each 128 MiB block's memory map (2 MiB) from ZONE_NORMAL (boot
    RAM here), then memhp_default_state=online_movable onlines it to ZONE_MOVABLE."""
    machine = make_machine(dimm_machine())
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    before = machine.snapshot().guest.boot_kernel  # type: ignore[union-attr]
    plug(machine)
    dimm = guest_dimm(machine)
    assert {mb.zone for mb in dimm.memory_blocks} == {"Movable"}  # type: ignore[attr-defined]
    assert len(dimm.memory_blocks) == 4  # type: ignore[attr-defined]
    assert dimm.memmap_pages == 4 * 512  # type: ignore[attr-defined]
    after = machine.snapshot().guest.boot_kernel  # type: ignore[union-attr]
    assert after - before >= 4 * 512


def test_online_puts_it_in_zone_normal_and_offline_leaves_it(make_machine: MachineFactory
                                                             ) -> None:
    normal = make_machine(dimm_machine("memhp_default_state=online"))
    offline = make_machine(dimm_machine(""))  # Linux 6.1 without the option: offline
    for machine in (normal, offline):
        assert machine.wait_until(lambda m: m.guest_booted, 10)
        plug(machine)
    assert {mb.zone for mb in guest_dimm(normal).memory_blocks} == {"Normal"}  # type: ignore
    assert {mb.zone for mb in guest_dimm(offline).memory_blocks} == {"offline"}  # type: ignore
    out = control_for(offline).guest(__import__("control").Online("dimm1", "online_movable"))
    assert out.values["blocks"] == 4
    assert {mb.zone for mb in guest_dimm(offline).memory_blocks} == {"Movable"}  # type: ignore


def test_one_unmovable_page_keeps_the_whole_dimm(make_machine: MachineFactory) -> None:
    from control import Alloc, Free

    machine = make_machine(dimm_machine("memhp_default_state=online"))
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    plug(machine)
    guest_dimm(machine)
    control = control_for(machine)
    pinned = control.guest(Alloc(4096, unmovable=True, target="dimm1"))
    assert pinned.values["pages"] == 1
    control.dimms.device_del("dimm1")
    assert machine.wait_until(lambda m: (3, 130) in ost_statuses(m), 10)
    dimm = guest_dimm(machine)
    assert dimm.failures == 1  # type: ignore[attr-defined]
    assert machine.hotplug.by_id("dimm1") is not None
    assert machine.snapshot().dimms[0].size == 512 * MiB
    control.guest(Free(pinned.values["id"]))
    control.dimms.device_del("dimm1")
    assert machine.wait_until(lambda m: ost_statuses(m)[-1:] == [(3, 0)], 10)
    assert ost_statuses(machine) == [(1, 0), (3, 132), (3, 130), (3, 132), (3, 0)]
    assert machine.hotplug.by_id("dimm1") is None


def test_movable_data_is_migrated_out_before_the_eject(make_machine: MachineFactory) -> None:
    from control import Alloc, Verify

    machine = make_machine(dimm_machine())
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    plug(machine)
    guest_dimm(machine)
    control = control_for(machine)
    data = control.guest(Alloc(64 * MiB, target="dimm1"))
    control.dimms.device_del("dimm1")
    assert machine.wait_until(lambda m: m.hotplug.by_id("dimm1") is None, 10)
    assert control.guest(Verify(data.values["id"])).values == {"id": data.values["id"],
                                                               "bad": 0, "checked": 16384}
    assert machine.snapshot().dimms == ()


def test_misaligned_dimm_is_refused_by_the_guest(make_machine: MachineFactory) -> None:
    """check_hotplug_memory_range(): add_memory needs whole memory blocks; the guest answers
    the insert with _OST(1, 1) and leaves the DIMM unused."""
    machine = make_machine(dimm_machine())
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    plug(machine, size=130 * MiB)
    assert machine.wait_until(lambda m: (1, 1) in ost_statuses(m), 10)
    assert "add_memory failed" in "\n".join(machine.console)
    guest_dimm(machine, state="failed")


def test_without_the_driver_the_dimm_stays_unused(make_machine: MachineFactory) -> None:
    cfg = dimm_machine("memhp_default_state=online_movable acpi_no_memhotplug",
                       dimms=[DimmConfig("dimm1", "d1", 512 * MiB)])
    machine = make_machine(cfg)
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    time.sleep(0.2)
    assert machine.snapshot().guest.dimms == ()  # type: ignore[union-attr]
    assert "memory hotplug disabled" in "\n".join(machine.console)


def test_cold_plugged_dimm_is_added_at_boot_and_after_reset(make_machine: MachineFactory
                                                            ) -> None:
    cfg = dimm_machine(dimms=[DimmConfig("dimm1", "d1", 512 * MiB)])
    machine = make_machine(cfg)
    assert {mb.zone for mb in guest_dimm(machine).memory_blocks} == {"Movable"}  # type: ignore
    assert machine.snapshot().dimms[0].hotplugged is False
    control_for(machine).reboot()
    assert {mb.zone for mb in guest_dimm(machine).memory_blocks} == {"Movable"}  # type: ignore
    assert ost_statuses(machine) == []  # found at boot: no _OST


REG = st.sampled_from([0x0, 0x4, 0x8, 0xC, 0x10, 0x14, 0x18, 0x1000 - 4])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.booleans(), REG, st.sampled_from([1, 2, 4, 8]),
                          st.integers(0, (1 << 64) - 1) | st.integers(0, 16)), max_size=40))
def test_any_guest_register_access_is_contained(make_machine: MachineFactory,
                                                accesses: list[tuple[bool, int, int, int]]
                                                ) -> None:
    """Whatever the guest reads or writes in the memory hotplug and GED windows: no
    exception, the stage-2 window agrees with the DIMMs left, and the guest still boots."""
    cfg = dimm_machine(dimms=[DimmConfig("dimm1", "d1", 256 * MiB),
                              DimmConfig("dimm2", "d2", 128 * MiB, slot=2)],
                       backends=[BackendConfig("d3", 128 * MiB)])
    machine = make_machine(cfg, start=False)
    hotplug = machine.hotplug
    for write, offset, size, value in accesses:
        if write:
            hotplug.mhp_write(offset, size, value)
        else:
            assert 0 <= hotplug.mhp_read(offset, size) < 1 << 64
            assert hotplug.ged_read(offset, size) in (0, 1)
    hotplug.after_slice()
    window = hotplug.window
    assert window is not None
    present = {d.addr: d.size for d in hotplug.dimms.values()}
    for block, bit in enumerate(window.bitmap):
        addr = window.addr + block * window.block_size
        inside = any(a <= addr < a + s for a, s in present.items())
        assert bool(bit) == inside
    machine.start()
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    assert machine.runstate == "running"
    assert {d.slot for d in machine.snapshot().dimms} == {d.slot for d in hotplug.dimms.values()}
