"""virtio-balloon on the real machine: the guest's C driver, the device, host memory.

Each test shows one fact of reference/qemu-transcripts/11_balloon.txt or one claim of the
2017 RFC about the balloon, measured on host memory (RSS, resident pages) and in the guest's
own numbers (struct abi_balloon_view).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from control import control_for
from device.events import BalloonActual
from emulator.config import BalloonConfig, MachineConfig, MemoryDeviceConfig, MiB
from emulator.machine import Machine
from emulator.workload import Workload

PAGE = 4096


def balloon_machine(boot: int = 256 * MiB, **opts: object) -> Machine:
    cmdline = str(opts.pop("cmdline", "memhp_default_state=online_movable"))
    devices = opts.pop("devices", [])
    nodes = opts.pop("nodes", [])
    cfg = MachineConfig(boot_ram=boot, balloon=BalloonConfig(**opts),  # type: ignore[arg-type]
                        devices=list(devices), nodes=list(nodes),  # type: ignore[call-overload]
                        cmdline=cmdline)
    return Machine(cfg)


@pytest.fixture
def machine() -> Iterator[Machine]:
    m = balloon_machine()
    m.start()
    assert m.wait_until(lambda m: m.guest_states.get("balloon0") == "idle", 10)
    yield m
    m.close()


def settle(m: Machine, pages: int, timeout: float = 30) -> None:
    assert m.wait_until(lambda m: m.balloon is not None and m.balloon.actual == pages
                        and m.guest_states.get("balloon0") == "idle", timeout), (
        m.balloon.actual if m.balloon else None, m.guest_states)


def test_driver_binds_and_reports_stats_once_at_probe(machine: Machine) -> None:
    snap = machine.snapshot()
    b = snap.balloon
    assert b is not None and b.guest is not None
    assert b.guest_size == 256 * MiB and b.actual == 0 and b.driver_state == "idle"
    assert b.driver_features & 0xFF == 0b10  # STATS_VQ only: PAGE_POISON is offered, not taken
    assert b.stats["stat-total-memory"] == b.guest.total_pages * PAGE > 0
    assert b.stats_last_update > 0 and b.guest.stats_sent == 1


def test_inflate_in_steps_of_256_pages_and_balloon_change_from_the_first_mib(
        machine: Machine) -> None:
    seq = machine.bus.last_seq
    machine.set_balloon_target(192 * MiB)
    settle(machine, 64 * MiB // PAGE)
    changes = [r.event for r in machine.bus.since(seq) if isinstance(r.event, BalloonActual)]
    assert [c.actual for c in changes[:2]] == [256, 512]  # one array of 256 PFNs at a time
    assert changes[0].guest_size == 255 * MiB  # the transcript's first 1072693248 on 1 GiB
    assert changes[-1].guest_size == 192 * MiB
    snap = machine.snapshot()
    assert snap.balloon is not None and snap.balloon.guest is not None
    assert snap.balloon.guest.requests == 64  # 16384 pages / 256
    assert snap.balloon.host_inflated == 16384 == snap.balloon.guest.pages_boot


def test_inflating_touched_memory_frees_host_memory_deflating_does_not_bring_it_back(
        machine: Machine) -> None:
    work = Workload(machine)
    alloc = work.alloc(160 * MiB)
    work.free(alloc)
    touched = machine.snapshot(residency=True).boot_resident
    assert touched is not None and touched > 160 * MiB
    machine.set_balloon_target(64 * MiB)
    settle(machine, 192 * MiB // PAGE)
    inflated = machine.snapshot(residency=True).boot_resident
    assert inflated is not None and touched - inflated > 150 * MiB
    machine.set_balloon_target(256 * MiB)
    settle(machine, 0)
    deflated = machine.snapshot(residency=True).boot_resident
    assert deflated is not None and deflated - inflated < 4 * MiB  # MADV_WILLNEED: nothing back


def test_rogue_deflate_host_cannot_stop_it_the_page_is_backed_again(machine: Machine) -> None:
    machine.set_balloon_target(128 * MiB)
    settle(machine, 128 * MiB // PAGE)
    before = machine.snapshot(residency=True)
    assert before.balloon is not None and before.balloon.host_inflated_resident == 0
    result = machine.guest_command("balloon-rogue", 2048)
    assert result.status == 0 and result.values == (2048, 0)  # written, and read back intact
    after = machine.snapshot(residency=True)
    assert after.balloon is not None and after.balloon.guest is not None
    assert after.balloon.host_inflated_resident == 2048
    assert after.balloon.actual == before.balloon.actual  # the host still counts them as its
    assert after.balloon.guest.rogue_pages == 2048
    assert after.boot_resident is not None and before.boot_resident is not None
    assert after.boot_resident - before.boot_resident >= 2048 * PAGE
    assert not [r for r in machine.bus.since(0) if r.event.kind == "violation"]


def test_target_above_ram_deflates_fully_and_the_balloon_cannot_add_memory(
        machine: Machine) -> None:
    machine.set_balloon_target(128 * MiB)
    settle(machine, 32768)
    machine.set_balloon_target(1 << 40)  # "balloon 2048" on a 1 GiB guest
    settle(machine, 0)
    snap = machine.snapshot()
    assert snap.balloon is not None
    assert snap.balloon.guest_size == 256 * MiB == snap.balloon.ram_size


def test_without_deflate_on_oom_memtotal_drops_and_the_guest_runs_out(machine: Machine) -> None:
    machine.set_balloon_target(64 * MiB)
    settle(machine, 192 * MiB // PAGE)
    snap = machine.snapshot()
    assert snap.balloon is not None and snap.balloon.guest is not None
    total = snap.balloon.guest.total_pages
    assert total < 70 * MiB // PAGE  # MemTotal dropped by the balloon
    result = machine.guest_command("alloc", 128 * MiB, 0xFF << 8, 1)
    assert result.status == -12  # ENOMEM: the balloon keeps its pages
    assert machine.balloon is not None and machine.balloon.actual == 192 * MiB // PAGE


def test_deflate_on_oom_takes_memory_back_without_asking() -> None:
    m = balloon_machine(deflate_on_oom=True)
    m.start()
    try:
        assert m.wait_until(lambda m: m.guest_states.get("balloon0") == "idle", 10)
        m.set_balloon_target(64 * MiB)
        settle(m, 192 * MiB // PAGE)
        before = m.snapshot()
        assert before.balloon is not None and before.balloon.guest is not None
        assert before.balloon.deflate_on_oom
        assert before.balloon.guest.total_pages > 240 * MiB // PAGE  # MemTotal stays
        alloc = Workload(m).alloc(128 * MiB)
        assert alloc.pages == 128 * MiB // PAGE
        after = m.snapshot()
        assert after.balloon is not None and after.balloon.guest is not None
        assert after.balloon.guest.oom_deflated > 0
        assert after.balloon.guest_size > after.balloon.target_size  # target ignored
        assert after.balloon.num_pages == before.balloon.num_pages  # the host asked nothing
        assert after.balloon.guest.oom_deflated % 256 == 0  # 256 pages a notifier call
    finally:
        m.close()


def test_free_page_reporting_returns_freed_memory_without_host_action() -> None:
    m = balloon_machine(free_page_reporting=True)
    m.start()
    try:
        assert m.wait_until(lambda m: m.guest_states.get("balloon0") == "idle", 10)
        work = Workload(m)
        alloc = work.alloc(96 * MiB)
        work.touch(alloc)
        touched = m.snapshot(residency=True).boot_resident
        assert touched is not None and touched > 96 * MiB
        work.free(alloc)
        assert m.wait_until(lambda m: (m.snapshot(residency=True).boot_resident or 0)
                            < touched - 80 * MiB, 15)
        snap = m.snapshot()
        assert snap.balloon is not None and snap.balloon.guest is not None
        assert snap.balloon.reported_bytes >= 80 * MiB and snap.balloon.actual == 0
        assert any("Free page reporting enabled" in line for line in m.console)
    finally:
        m.close()


def test_target_survives_reset_and_the_new_driver_inflates_again(machine: Machine) -> None:
    machine.set_balloon_target(192 * MiB)
    settle(machine, 16384)
    ctl = control_for(machine)
    ctl.set_pace(pause_after_reset=True)  # hold the machine before the new driver runs
    machine.system_reset()
    assert machine.wait_until(lambda m: m.runstate == "paused", 10)
    right_after = machine.snapshot()
    assert right_after.balloon is not None
    assert right_after.balloon.guest_size == 192 * MiB  # stale, as QEMU's "info balloon"
    seq = machine.bus.last_seq
    ctl.resume()
    settle(machine, 16384)
    first = next(r.event for r in machine.bus.since(seq) if isinstance(r.event, BalloonActual))
    assert first.actual == 256  # the new driver starts from an empty balloon
    snap = machine.snapshot()
    assert snap.balloon is not None and snap.balloon.guest is not None
    assert snap.balloon.guest.inflated == 16384  # inflated again since this boot


def test_blacklisted_driver_leaves_the_balloon_alone() -> None:
    m = balloon_machine(cmdline="memhp_default_state=online_movable "
                                "modprobe.blacklist=virtio_balloon")
    m.start()
    try:
        assert m.wait_until(lambda m: m.guest_states.get("balloon0") == "disabled", 10)
        m.set_balloon_target(64 * MiB)
        assert not m.wait_until(lambda m: m.balloon is not None and m.balloon.actual != 0, 0.5)
        assert m.snapshot().balloon.guest_size == 256 * MiB  # type: ignore[union-attr]
    finally:
        m.close()


def test_out_of_puff_when_there_is_nothing_left_to_take(machine: Machine) -> None:
    Workload(machine).alloc(200 * MiB)
    machine.set_balloon_target(8 * MiB)
    assert machine.wait_until(lambda m: m.guest_states.get("balloon0") == "retrying", 10)
    snap = machine.snapshot()
    assert snap.balloon is not None and snap.balloon.guest is not None
    assert snap.balloon.guest.out_of_puff > 0 and snap.balloon.guest_size > 8 * MiB
    assert any("Out of puff!" in line for line in machine.console)
    assert snap.runstate == "running"


def test_works_on_all_memory_boot_ram_and_virtio_mem_memory() -> None:
    m = balloon_machine(devices=[MemoryDeviceConfig("vm0", 512 * MiB, requested_size=128 * MiB)])
    m.start()
    try:
        assert m.wait_until(lambda m: m.guest_states.get("vm0") == "idle"
                            and m.guest_states.get("balloon0") == "idle", 10)
        m.set_balloon_target(56 * MiB)  # 200 MiB of the 256 MiB RAM, vm0's 128 MiB first
        settle(m, 200 * MiB // PAGE)
        g = m.snapshot().balloon.guest  # type: ignore[union-attr]
        assert g is not None and g.pages_dev[0] == 128 * MiB // PAGE  # ZONE_MOVABLE first
        assert g.pages_boot == 72 * MiB // PAGE  # and boot RAM
    finally:
        m.close()


def test_not_numa_aware_the_host_cannot_pick_a_node() -> None:
    from emulator.config import NumaNodeConfig

    m = balloon_machine(nodes=[NumaNodeConfig(0, [0]), NumaNodeConfig(1, [])],
                        devices=[MemoryDeviceConfig("vm0", 256 * MiB, node=0,
                                                    requested_size=64 * MiB),
                                 MemoryDeviceConfig("vm1", 256 * MiB, node=1,
                                                    requested_size=64 * MiB)])
    m.start()
    try:
        assert m.wait_until(lambda m: all(m.guest_states.get(d) == "idle"
                                          for d in ("vm0", "vm1", "balloon0")), 10)
        m.set_balloon_target(128 * MiB)  # 128 MiB: node 0 and node 1 give pages alike
        settle(m, 128 * MiB // PAGE)
        g = m.snapshot().balloon.guest  # type: ignore[union-attr]
        assert g is not None and g.pages_dev[0] > 0 and g.pages_dev[1] > 0
    finally:
        m.close()


def test_virtio_mem_unplug_migrates_balloon_pages_balloon_compaction() -> None:
    m = balloon_machine(devices=[MemoryDeviceConfig("vm0", 512 * MiB, requested_size=256 * MiB)])
    m.start()
    try:
        assert m.wait_until(lambda m: m.guest_states.get("vm0") == "idle"
                            and m.guest_states.get("balloon0") == "idle", 10)
        m.set_balloon_target(192 * MiB)  # 64 MiB, all from vm0 (ZONE_MOVABLE first)
        settle(m, 64 * MiB // PAGE)
        assert m.snapshot().balloon.guest.pages_dev[0] == 16384  # type: ignore[union-attr]
        m.set_requested_size("vm0", 0)
        assert m.wait_until(lambda m: m.devices["vm0"].plugged_size == 0
                            and m.guest_states.get("vm0") == "idle", 20)
        snap = m.snapshot()
        g = snap.balloon.guest  # type: ignore[union-attr]
        assert g is not None and g.pages_dev[0] == 0 and g.pages_boot == 16384
        assert g.migrated == 16384 and snap.balloon.actual == 16384  # type: ignore[union-attr]
        assert snap.balloon.host_inflated == 16384  # type: ignore[union-attr]
    finally:
        m.close()


def test_stats_polling_hands_the_buffer_back_every_interval(machine: Machine) -> None:
    first = machine.snapshot().balloon
    assert first is not None and first.guest is not None
    machine.set_balloon_poll_interval(1)
    assert machine.wait_until(
        lambda m: (m.snapshot().balloon.guest.stats_sent  # type: ignore[union-attr]
                   >= 3), 6)
    machine.set_balloon_poll_interval(0)


def test_migration_carries_the_balloon(tmp_path: object) -> None:
    import io

    m = balloon_machine()
    m.start()
    try:
        assert m.wait_until(lambda m: m.guest_states.get("balloon0") == "idle", 10)
        m.set_balloon_target(192 * MiB)
        settle(m, 16384)
        stream = io.BytesIO()
        m.save(stream)
    finally:
        m.close()
    dest = Machine(m.config, incoming=True)
    try:
        stream.seek(0)
        dest.load_state(stream)
        dest.start()
        assert dest.balloon is not None
        assert (dest.balloon.num_pages, dest.balloon.actual) == (16384, 16384)
        dest.set_balloon_target(256 * MiB)
        settle(dest, 0)
    finally:
        dest.close()
