"""The guest's memory model follows Linux 6.1 (issue 10 §3), on the real guest and Unicorn.

Every test names the Linux source it follows: file, function and the quoted line, from
drivers/virtio/virtio_mem.c, mm/memory_hotplug.c, mm/sparse-vmemmap.c and include/linux/mm.h
as of v6.1. Addresses: with 256 MiB or less of boot RAM the device area starts at 2 GiB, so the
first 128 MiB memory block of a device is ``memory16``.
"""

from __future__ import annotations

import itertools

from device.events import VirtioRequest, VirtioResponse
from emulator import Machine, MachineConfig, MemoryDeviceConfig
from emulator.config import GiB, MiB
from emulator.events import GuestStatus
from emulator.guest_view import GuestDeviceView
from emulator.workload import GuestError, Workload
from tests.conftest import MachineFactory, wait_settled
from webapp import view_model

PAGES_PER_MB = 128 * MiB // 4096
MEMMAP_PAGES = PAGES_PER_MB * 64 // 4096  # 64-byte struct page per 4 KiB page: 512 pages


def machine_with(make_machine: MachineFactory, cmdline: str, *, boot_ram: int = 256 * MiB,
                 size: int = 1 * GiB, requested: int = 512 * MiB,
                 block_size: int = 2 * MiB, more: tuple[MemoryDeviceConfig, ...] = ()
                 ) -> Machine:
    dev = MemoryDeviceConfig(id="vm0", memdev="mem0", size=size, requested_size=requested,
                             block_size=block_size)
    return make_machine(MachineConfig(boot_ram=boot_ram, devices=[dev, *more], cmdline=cmdline))


def zones(machine: Machine, index: int = 0) -> list[str]:
    """The zone of every added memory block of a device, lowest first."""
    snap = machine.snapshot()
    assert snap.guest is not None
    dev = snap.guest.devices[index]
    assert dev is not None
    return [mb.zone for mb in dev.memory_blocks if mb.zone != "none"]


def requests(machine: Machine, since: int = 0, kinds: tuple[str, ...] = ("PLUG", "UNPLUG")
             ) -> list[tuple[str, int, int]]:
    """(type, offset from the device start, nb_blocks) of every request since ``since``."""
    base = machine.devices["vm0"].addr
    return [(r.event.type, r.event.addr - base, r.event.nb_blocks)
            for r in machine.bus.since(since)
            if isinstance(r.event, VirtioRequest) and r.event.type in kinds]


def responses(machine: Machine, since: int = 0) -> list[str]:
    return [r.event.response for r in machine.bus.since(since)
            if isinstance(r.event, VirtioResponse)]


def guest_device(machine: Machine, index: int = 0) -> GuestDeviceView:
    snap = machine.snapshot()
    assert snap.guest is not None
    dev = snap.guest.devices[index]
    assert dev is not None
    return dev


# ------------------------------------------------------------------------------ zones

def test_online_movable_onlines_every_block_to_zone_movable(make_machine: MachineFactory
                                                            ) -> None:
    """memhp_default_state=online_movable, the transcripts' guest (01: ``memory32..35: online
    zones=Movable``). mm/memory_hotplug.c, zone_for_pfn_range():
    ``if (online_type == MMOP_ONLINE_MOVABLE) return &NODE_DATA(nid)->node_zones[ZONE_MOVABLE];``
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable")
    wait_settled(machine)
    assert zones(machine) == ["Movable"] * 4
    gdev = guest_device(machine)
    assert [mb.name for mb in gdev.memory_blocks[:4]] == [f"memory{i}" for i in range(16, 20)]
    assert set(gdev.zones[:256]) == {"Movable"} and set(gdev.zones[256:]) == {"none"}
    from monitor import run_hmp

    info = run_hmp(machine, "info guest")
    assert "memhp_default_state=online_movable, online_policy=contig-zones" in info
    assert "  memory16..19: online zones=Movable\n" in info
    # the page's hover shows it too
    hover = view_model.block_info(machine.snapshot(), "vm0", 3)
    assert (hover["memory_block"], hover["zone"], hover["memory_block_state"]) == (
        "memory16", "Movable", "movable")
    assert view_model.block_info(machine.snapshot(), "vm0", 300)["zone"] == "none"


def test_online_and_online_kernel_online_to_zone_normal(make_machine: MachineFactory) -> None:
    """memhp_default_state=online with the default contig-zones policy, and online_kernel.
    mm/memory_hotplug.c, default_zone_for_pfn(): ``return movable_node_enabled ? movable_zone :
    kernel_zone;`` (hot-added memory above boot RAM lies in neither zone's span);
    zone_for_pfn_range(): ``if (online_type == MMOP_ONLINE_KERNEL) return
    default_kernel_zone_for_pfn(nid, start_pfn, nr_pages);``
    """
    for cmdline in ("memhp_default_state=online", "memhp_default_state=online_kernel"):
        machine = machine_with(make_machine, cmdline, requested=256 * MiB)
        wait_settled(machine)
        assert zones(machine) == ["Normal", "Normal"], cmdline
        assert view_model.block_info(machine.snapshot(), "vm0", 0)["zone"] == "Normal"


def test_without_memhp_default_state_memory_stays_offline_up_to_the_threshold(
        make_machine: MachineFactory) -> None:
    """Linux 6.1 leaves hot-added memory offline by default, and virtio-mem stops adding once
    the offline threshold (1 GiB) is reached: transcript 09, "plugging stopped at exactly 1 GiB:
    8 offline blocks ... After the guest onlined the blocks, it went on to 2G".
    mm/memory_hotplug.c: ``int mhp_default_online_type = MMOP_OFFLINE;`` (no
    CONFIG_MEMORY_HOTPLUG_DEFAULT_ONLINE); drivers/virtio/virtio_mem.c,
    virtio_mem_init_hotplug(): ``vm->offline_threshold = max_t(uint64_t, 2 *
    memory_block_size_bytes(), VIRTIO_MEM_DEFAULT_OFFLINE_THRESHOLD);``,
    virtio_mem_sbm_plug_request(): ``if (!virtio_mem_could_add_memory(vm,
    memory_block_size_bytes())) return -ENOSPC;``, virtio_mem_run_wq(): ``case -ENOSPC:``
    (no timer), virtio_mem_memory_notifier_cb() on MEM_ONLINE: ``if
    (!atomic_read(&vm->wq_active) && virtio_mem_could_add_memory(vm, vm->offline_threshold /
    2)) virtio_mem_retry(vm);``
    """
    machine = machine_with(make_machine, "virtio_mem.retry_ms=50", size=3 * GiB,
                           requested=2 * GiB)
    assert machine.wait_until(lambda m: m.guest_states.get("vm0") == "no-space", 30)
    assert machine.devices["vm0"].plugged_size == 1 * GiB
    assert zones(machine) == ["offline"] * 8
    gdev = guest_device(machine)
    assert (gdev.offline_size, gdev.offline_threshold) == (1 * GiB, 1 * GiB)
    # offline memory is added (its memory map exists) but not usable
    assert gdev.memmap_pages == 8 * MEMMAP_PAGES
    assert all(u[2] == 0 for u in gdev.usage)
    seq = machine.bus.last_seq
    assert not machine.wait_until(lambda m: len(requests(m, seq)) > 0, 0.3)  # no timer
    # the user onlines them (echo online_movable > .../memoryN/state): the driver goes on
    from monitor import run_hmp

    assert run_hmp(machine, "guest online vm0") == "onlined 8 memory blocks (online_movable)\n"
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 2 * GiB, 30)
    assert zones(machine) == ["Movable"] * 8 + ["offline"] * 8
    wait_settled(machine)
    assert machine.guest_states["vm0"] == "idle"


def test_auto_movable_keeps_the_movable_to_kernel_ratio(make_machine: MachineFactory) -> None:
    """memory_hotplug.online_policy=auto-movable: a block goes to ZONE_MOVABLE only while
    MOVABLE:KERNEL_EARLY stays within auto_movable_ratio (301 %), and ZONE_NORMAL memory of the
    same device (a dynamic memory group) allows for more. With 128 MiB of boot RAM: 385 MiB.
    mm/memory_hotplug.c: ``static unsigned int auto_movable_ratio __read_mostly = 301;``,
    auto_movable_can_online_movable(): ``if (group && group->is_dynamic) kernel_early_pages +=
    group->present_kernel_pages;`` and ``return movable_pages <= (auto_movable_ratio *
    kernel_early_pages) / 100;``
    """
    machine = machine_with(
        make_machine, "memhp_default_state=online memory_hotplug.online_policy=auto-movable",
        boot_ram=128 * MiB, requested=1 * GiB)
    wait_settled(machine)
    # 3 x 128M fit 385M; the 4th is Normal; that allows 770M: 3 more Movable; the 8th is Normal
    assert zones(machine) == ["Movable"] * 3 + ["Normal"] + ["Movable"] * 3 + ["Normal"]
    machine = machine_with(
        make_machine, "memhp_default_state=online memory_hotplug.online_policy=auto-movable "
        "memory_hotplug.auto_movable_ratio=100", boot_ram=128 * MiB, requested=512 * MiB)
    wait_settled(machine)
    assert zones(machine) == ["Movable", "Normal", "Movable", "Normal"]


# ---------------------------------------------------------------- what each zone may hold

def test_pins_and_kernel_allocations_never_land_in_zone_movable(make_machine: MachineFactory
                                                                ) -> None:
    """Unmovable allocations can only use ZONE_NORMAL (boot RAM here): they fail while plenty
    of ZONE_MOVABLE memory is free (the RFC's Q&A 4: "certain allocations cannot go into the
    movable zone ... there is plenty of memory available, but kernel allocations fail"). A
    long-term pin aimed at device memory is moved out of ZONE_MOVABLE first.
    include/linux/mm.h, is_longterm_pinnable_page(): ``return !is_zone_movable_page(page);``
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable",
                           boot_ram=128 * MiB, requested=1 * GiB)
    wait_settled(machine)
    work = Workload(machine)
    pinned = work.alloc(16 * MiB, unmovable=True, target="vm0")
    gdev = guest_device(machine)
    assert sum(u[1] for u in gdev.usage) == 0  # nothing unmovable in vm0
    snap = machine.snapshot()
    assert snap.guest is not None and snap.guest.boot_unmovable == pinned.pages
    assert any("pinned outside ZONE_MOVABLE" in line for line in machine.console)
    try:
        work.alloc(200 * MiB, unmovable=True)
        raise AssertionError("a 200M kernel allocation fit into 128M of boot RAM")
    except GuestError as err:
        assert "ENOMEM" in str(err)
    assert any("page allocation failure" in line for line in machine.console)
    big = work.alloc(900 * MiB, target="vm0")  # movable: ZONE_MOVABLE has the room
    assert big.pages == 900 * MiB // 4096
    assert work.verify(pinned) == (0, pinned.pages)


def test_zone_movable_always_empties_zone_normal_stops_short_on_pins(
        make_machine: MachineFactory) -> None:
    """In ZONE_MOVABLE every page can migrate, so the unplug finishes; in ZONE_NORMAL a pinned
    page makes alloc_contig_range() fail with -EBUSY and the driver skips that subblock.
    drivers/virtio/virtio_mem.c, virtio_mem_fake_offline(): ``rc = alloc_contig_range(pfn, pfn
    + nr_pages, MIGRATE_MOVABLE, GFP_KERNEL);``; virtio_mem_sbm_unplug_any_sb_online(): ``if
    (rc == -EBUSY) continue;``; virtio_mem_sbm_unplug_request(): ``return nb_sb ? -EBUSY :
    0;``
    """
    for cmdline, plugged in (("memhp_default_state=online_movable", 0),
                             ("memhp_default_state=online", 16 * MiB)):
        machine = machine_with(make_machine, f"{cmdline} virtio_mem.retry_ms=50")
        wait_settled(machine)
        work = Workload(machine)
        data = work.alloc(64 * MiB, target="vm0")
        pinned = work.alloc(16 * MiB, unmovable=True, target="vm0")
        machine.set_requested_size("vm0", 0)
        wait_settled(machine)
        assert machine.devices["vm0"].plugged_size == plugged, cmdline
        assert machine.guest_states["vm0"] == ("idle" if not plugged else "stopped-short")
        assert work.verify(data) == (0, data.pages)
        assert work.verify(pinned) == (0, pinned.pages)


# ------------------------------------------------------------------------------ memmap

def test_the_memory_map_costs_64_bytes_per_page_of_added_memory(make_machine: MachineFactory
                                                                ) -> None:
    """Adding a 128 MiB memory block allocates its memory map, 64 bytes (sizeof(struct page))
    per 4 KiB page: 2 MiB, 1.56 % (the RFC's "roughly 1.6%"), from boot RAM, and removing it
    frees it. mm/memory_hotplug.c, mhp_supports_memmap_on_memory(): ``unsigned long
    vmemmap_size = nr_vmemmap_pages * sizeof(struct page);``; mm/sparse-vmemmap.c,
    vmemmap_alloc_block(): ``page = alloc_pages_node(node, gfp_mask, order);`` with ``gfp_t
    gfp_mask = GFP_KERNEL|__GFP_RETRY_MAYFAIL|__GFP_NOWARN;`` (never ZONE_MOVABLE).
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable", requested=0)
    wait_settled(machine)
    before = machine.snapshot().guest
    assert before is not None
    # boot RAM's own memory map is carved out of it the same way
    assert before.boot_kernel >= 256 * MiB // 4096 * 64 // 4096
    machine.set_requested_size("vm0", 512 * MiB)
    wait_settled(machine)
    after = machine.snapshot().guest
    assert after is not None and after.devices[0] is not None
    assert after.boot_kernel - before.boot_kernel == 4 * MEMMAP_PAGES
    assert after.devices[0].memmap_pages == 4 * MEMMAP_PAGES
    assert sum(after.devices[0].kernel) == 0  # ZONE_MOVABLE holds none of it
    machine.set_requested_size("vm0", 0)
    wait_settled(machine)
    gone = machine.snapshot().guest
    assert gone is not None and gone.boot_kernel == before.boot_kernel


def test_memmap_on_memory_does_not_apply_to_virtio_mem(make_machine: MachineFactory) -> None:
    """``memory_hotplug.memmap_on_memory=1`` places the memory map inside added memory only for
    callers that ask for it; virtio-mem never does, so the map still comes from boot RAM.
    drivers/virtio/virtio_mem.c, virtio_mem_add_memory(): ``rc =
    add_memory_driver_managed(vm->mgid, addr, size, vm->resource_name, MHP_MERGE_RESOURCE |
    MHP_NID_IS_MGID);``; mm/memory_hotplug.c, add_memory_resource(): ``if (mhp_flags &
    MHP_MEMMAP_ON_MEMORY) {``
    """
    base = machine_with(make_machine, "memhp_default_state=online_movable")
    other = machine_with(make_machine, "memhp_default_state=online_movable "
                                       "memory_hotplug.memmap_on_memory=1")
    wait_settled(base)
    wait_settled(other)
    a, b = base.snapshot().guest, other.snapshot().guest
    assert a is not None and b is not None
    assert a.boot_kernel == b.boot_kernel
    assert b.devices[0] is not None and sum(b.devices[0].kernel) == 0


def test_adding_memory_fails_where_boot_ram_cannot_hold_the_memory_map(
        make_machine: MachineFactory) -> None:
    """With 64 MiB of boot RAM the memory maps of ZONE_MOVABLE memory run out of room long
    before 8 GiB: add_memory() fails with -ENOMEM, the driver unplugs what it just plugged and
    retries on its timer. Onlined to ZONE_NORMAL, added memory holds later maps and all 8 GiB
    plug. drivers/virtio/virtio_mem.c, virtio_mem_add_memory(): ``dev_warn(&vm->vdev->dev,
    "adding memory failed: %d\\n", rc);``; virtio_mem_sbm_plug_and_add_mb(): ``if
    (virtio_mem_sbm_unplug_sb(vm, mb_id, 0, count)) new_state = VIRTIO_MEM_SBM_MB_PLUGGED;``;
    virtio_mem_run_wq(): ``case -ENOMEM: /* Out of memory, try again later. */``
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable "
                           "virtio_mem.retry_ms=50", boot_ram=64 * MiB, size=8 * GiB,
                           requested=8 * GiB)
    assert machine.wait_until(lambda m: m.guest_states.get("vm0") == "no-memory", 30)
    plugged = machine.devices["vm0"].plugged_size
    assert 1 * GiB < plugged < 8 * GiB
    assert any("adding memory failed: -12" in line for line in machine.console)
    failed = plugged // (2 * MiB)
    seq = machine.bus.last_seq
    # the timer retries: PLUG, adding fails, UNPLUG of the same range, again and again
    assert machine.wait_until(lambda m: len(requests(m, seq)) >= 4, 10)
    assert requests(machine, seq)[:4] == [("PLUG", failed * 2 * MiB, 64),
                                          ("UNPLUG", failed * 2 * MiB, 64)] * 2
    # between two retries nothing more stays plugged
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == plugged, 5)
    normal = machine_with(make_machine, "memhp_default_state=online", boot_ram=64 * MiB,
                          size=8 * GiB, requested=8 * GiB)
    wait_settled(normal, timeout=60)
    assert normal.devices["vm0"].plugged_size == 8 * GiB
    gdev = guest_device(normal)
    assert sum(gdev.kernel) > 0  # later memory maps live in ZONE_NORMAL device memory
    hover = view_model.block_info(normal.snapshot(), "vm0",
                                  next(i for i, k in enumerate(gdev.kernel) if k))
    assert hover["kernel_pages"] > 0 and hover["zone"] == "Normal"


# ---------------------------------------------------------------- geometry and sizes

def test_only_memory_blocks_wholly_inside_the_device_are_used(make_machine: MachineFactory
                                                              ) -> None:
    """A 200 MiB device plugs 128 MiB (one whole memory block), and a device that starts
    inside a memory block loses that block. drivers/virtio/virtio_mem.c,
    virtio_mem_init_hotplug(): ``addr = max_t(uint64_t, vm->addr, pluggable_range.start) +
    memory_block_size_bytes() - 1;`` ("Round up to the next full memory block") and
    ``"The alignment of the physical start address can make some memory unusable.\\n"``;
    virtio_mem_refresh_config(): ``if (!IS_ALIGNED(end_addr + 1, memory_block_size_bytes()))
    vm->sbm.last_usable_mb_id--;``; virtio_mem_sbm_prepare_next_mb(): ``if
    (vm->sbm.next_mb_id > vm->sbm.last_usable_mb_id) return -ENOSPC;``
    """
    second = MemoryDeviceConfig(id="vm1", memdev="mem1", size=512 * MiB,
                                requested_size=512 * MiB)
    machine = machine_with(make_machine, "memhp_default_state=online_movable",
                           size=200 * MiB, requested=200 * MiB, more=(second,))
    assert machine.wait_until(lambda m: m.guest_states.get("vm0") == "no-space"
                              and m.guest_states.get("vm1") == "no-space", 30)
    assert machine.devices["vm0"].plugged_size == 128 * MiB
    # vm1 starts 200M into the area: its first whole memory block starts 56M further in
    assert machine.devices["vm1"].addr == machine.devices["vm0"].addr + 200 * MiB
    assert machine.devices["vm1"].plugged_size == 384 * MiB
    assert machine.devices["vm1"].bitmap[:28] == b"\x00" * 28
    assert any("virtio_mem virtio1: The alignment of the physical start address can make "
               "some memory unusable." in line for line in machine.console)
    seq = machine.bus.last_seq
    assert not machine.wait_until(lambda m: len(requests(m, seq)) > 0, 0.3)  # no timer


def test_subblocks_are_at_least_a_pageblock(make_machine: MachineFactory) -> None:
    """With 1 MiB device blocks the subblock is still 2 MiB: one PLUG of 128 blocks per memory
    block (transcript 06), and a partly plugged block is unplugged in UNPLUG requests of 2
    blocks, one subblock each. drivers/virtio/virtio_mem.c, virtio_mem_init_hotplug(): ``sb_size
    = PAGE_SIZE * pageblock_nr_pages;`` then ``sb_size = max_t(uint64_t,
    vm->device_block_size, sb_size);`` (pageblock_order 9: 2 MiB);
    virtio_mem_sbm_unplug_any_sb_online(): ``rc = virtio_mem_sbm_unplug_sb_online(vm, mb_id,
    sb_id, 1);``
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable",
                           block_size=1 * MiB, requested=128 * MiB + 64 * MiB)
    wait_settled(machine)
    assert any("subblock size: 0x200000" in line for line in machine.console)
    assert requests(machine) == [("PLUG", 0, 128), ("PLUG", 128 * MiB, 64)]
    seq = machine.bus.last_seq
    machine.set_requested_size("vm0", 128 * MiB)
    wait_settled(machine)
    assert requests(machine, seq) == [("UNPLUG", 128 * MiB + (31 - i) * 2 * MiB, 2)
                                      for i in range(32)]


def test_device_blocks_of_a_memory_block_or_more_select_big_block_mode(
        make_machine: MachineFactory) -> None:
    """1 GiB device blocks: Big Block Mode, one request per 1 GiB big block (transcript 06),
    which spans eight Linux memory blocks with one memory map of 16 MiB.
    drivers/virtio/virtio_mem.c, virtio_mem_init_hotplug(): ``if (sb_size <
    memory_block_size_bytes() && !force_bbm) {`` else ``vm->bbm.bb_size =
    max_t(uint64_t, vm->device_block_size, memory_block_size_bytes());``;
    virtio_mem_bbm_plug_request() / virtio_mem_bbm_unplug_request()
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable", size=4 * GiB,
                           requested=2 * GiB, block_size=1 * GiB)
    wait_settled(machine)
    assert any("big block size: 0x40000000" in line for line in machine.console)
    assert requests(machine) == [("PLUG", 0, 1), ("PLUG", 1 * GiB, 1)]
    gdev = guest_device(machine)
    assert [mb.name for mb in gdev.memory_blocks[:2]] == ["memory16..23", "memory24..31"]
    assert gdev.memmap_pages == 2 * 8 * MEMMAP_PAGES
    seq = machine.bus.last_seq
    machine.set_requested_size("vm0", 1 * GiB)
    wait_settled(machine)
    assert requests(machine, seq) == [("UNPLUG", 1 * GiB, 1)]


# ---------------------------------------------------------------- plug and unplug order

def test_plug_fills_partly_plugged_blocks_first_then_adds_new_ones_lowest_first(
        make_machine: MachineFactory) -> None:
    """drivers/virtio/virtio_mem.c, virtio_mem_sbm_plug_request(): ``const int mb_states[] = {
    VIRTIO_MEM_SBM_MB_KERNEL_PARTIAL, VIRTIO_MEM_SBM_MB_MOVABLE_PARTIAL,
    VIRTIO_MEM_SBM_MB_OFFLINE_PARTIAL, };`` then ``/* Try to plug and add unused blocks */``;
    virtio_mem_sbm_plug_any_sb(): ``sb_id = virtio_mem_sbm_first_unplugged_sb(vm, mb_id);``;
    virtio_mem_sbm_plug_and_add_mb(): ``rc = virtio_mem_sbm_plug_sb(vm, mb_id, 0, count);``
    before ``rc = virtio_mem_sbm_add_mb(vm, mb_id);``
    """
    machine = machine_with(make_machine, "virtio_mem.retry_ms=50", requested=192 * MiB)
    wait_settled(machine)
    assert Workload(machine).online("vm0", "online_movable") == 2  # memory16 full, 17 half
    seq = machine.bus.last_seq
    machine.set_requested_size("vm0", 448 * MiB)
    wait_settled(machine)
    assert requests(machine, seq) == [("PLUG", 192 * MiB, 32), ("PLUG", 256 * MiB, 64),
                                      ("PLUG", 384 * MiB, 32)]
    assert zones(machine) == ["Movable", "Movable", "offline", "offline"]


def test_unplug_order_is_linuxs_not_a_guess_at_which_blocks_are_free(
        make_machine: MachineFactory) -> None:
    """Memory block states in Linux's order, each in reverse address order: offline-partial,
    offline, movable-partial, kernel-partial, movable, kernel. A fully plugged online block goes
    in one request. drivers/virtio/virtio_mem.c, virtio_mem_sbm_unplug_request(): ``const int
    mb_states[] = { VIRTIO_MEM_SBM_MB_OFFLINE_PARTIAL, VIRTIO_MEM_SBM_MB_OFFLINE,
    VIRTIO_MEM_SBM_MB_MOVABLE_PARTIAL, VIRTIO_MEM_SBM_MB_KERNEL_PARTIAL,
    VIRTIO_MEM_SBM_MB_MOVABLE, VIRTIO_MEM_SBM_MB_KERNEL, };`` and
    ``virtio_mem_sbm_for_each_mb_rev(vm, mb_id, mb_states[i]) {``;
    virtio_mem_sbm_unplug_any_sb_online(): ``/* If possible, try to unplug the complete block
    in one shot. */``
    """
    machine = machine_with(make_machine, "virtio_mem.retry_ms=50", requested=256 * MiB)
    wait_settled(machine)
    work = Workload(machine)
    work.online("vm0", "online_movable")  # memory16, 17
    machine.set_requested_size("vm0", 512 * MiB)
    wait_settled(machine)
    work.online("vm0", "online_kernel")  # memory18, 19
    machine.set_requested_size("vm0", 640 * MiB)  # memory20: offline
    wait_settled(machine)
    machine.set_requested_size("vm0", 704 * MiB)  # memory21: offline, half plugged
    wait_settled(machine)
    assert zones(machine) == ["Movable"] * 2 + ["Normal"] * 2 + ["offline"] * 2
    seq = machine.bus.last_seq
    machine.set_requested_size("vm0", 0)
    wait_settled(machine)
    mb = 128 * MiB
    assert requests(machine, seq) == [
        ("UNPLUG", 5 * mb, 32),  # offline-partial
        ("UNPLUG", 4 * mb, 64),  # offline
        ("UNPLUG", 1 * mb, 64), ("UNPLUG", 0, 64),  # movable
        ("UNPLUG", 3 * mb, 64), ("UNPLUG", 2 * mb, 64),  # kernel
    ]
    assert machine.devices["vm0"].plugged_size == 0


def test_a_pinned_high_block_is_tried_first_as_linux_does(make_machine: MachineFactory) -> None:
    """Linux does not know in advance which block holds pinned pages: in reverse address order
    it tries the highest block whole, then its subblocks one by one, skipping the busy ones,
    and only then goes to a lower block. drivers/virtio/virtio_mem.c,
    virtio_mem_sbm_unplug_any_sb_online(): ``/* Fallback to single subblocks. */`` and ``for
    (sb_id = vm->sbm.sbs_per_mb - 1; sb_id >= 0 && *nb_sb; sb_id--) {``
    """
    machine = machine_with(make_machine, "memhp_default_state=online virtio_mem.retry_ms=50")
    wait_settled(machine)
    work = Workload(machine)
    filler = work.alloc(384 * MiB, target="vm0")  # memory16..18, lowest first
    work.alloc(4 * MiB, unmovable=True, target="vm0")  # the first two subblocks of memory19
    work.free(filler)
    machine.set_requested_size("vm0", 384 * MiB)
    wait_settled(machine)
    bitmap = machine.devices["vm0"].bitmap
    assert bitmap[192:256] == b"\x01" * 2 + b"\x00" * 62  # memory19: only the pins remain
    assert bitmap[128:192] == b"\x01" * 62 + b"\x00" * 2  # the rest came from memory18
    assert bitmap[:128] == b"\x01" * 128


# ---------------------------------------------------------------- device answers

def test_nack_is_retried_at_once_and_without_limit(make_machine: MachineFactory) -> None:
    """A NACKed PLUG (the device's requested size shrank under the driver) is -EAGAIN: the work
    restarts at once, with no timer and no cap, until the config change arrives.
    drivers/virtio/virtio_mem.c, virtio_mem_send_plug_request(): ``case VIRTIO_MEM_RESP_NACK:
    rc = -EAGAIN;``; virtio_mem_run_wq(): ``case -EAGAIN: /* Retry immediately (e.g., the config
    changed). */ goto retry;``
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable "
                           "virtio_mem.retry_ms=1000", requested=128 * MiB)
    wait_settled(machine)
    dev = machine.devices["vm0"]
    machine.call(lambda: setattr(dev, "migration_running", True))
    machine.set_requested_size("vm0", 512 * MiB)  # the guest reads 512M, gets BUSY, waits
    assert machine.wait_until(lambda m: m.guest_states["vm0"] == "retrying", 10)
    notify = dev.notify_config

    def shrink_silently() -> None:  # a config change whose interrupt is late
        dev.notify_config = lambda: None
        dev.set_requested_size(256 * MiB)
        dev.migration_running = False

    machine.call(shrink_silently)
    seq = machine.bus.last_seq
    assert machine.wait_until(lambda m: responses(m, seq).count("NACK") >= 20, 10)
    events = [r.event for r in machine.bus.since(seq)]
    first_nack = next(i for i, e in enumerate(events)
                      if isinstance(e, VirtioResponse) and e.response == "NACK")
    states = {e.status for e in events[first_nack:] if isinstance(e, GuestStatus)}
    assert "retrying" not in states  # no timer between the NACKs
    assert dev.plugged_size == 256 * MiB

    def interrupt() -> None:
        dev.notify_config = notify
        notify()

    machine.call(interrupt)
    wait_settled(machine)
    assert machine.guest_states["vm0"] == "idle" and dev.plugged_size == 256 * MiB
    # the retry loop yields: the interrupt got in at a safe point, never by an async stop,
    # which can replay an instruction (an MMIO load replayed on its own result crashed it)
    assert machine.vcpu.watchdog_stops == 0


def test_error_marks_the_device_broken(make_machine: MachineFactory) -> None:
    """An ERROR answer is -EINVAL, which the work function does not expect: the driver stops.
    drivers/virtio/virtio_mem.c, virtio_mem_send_plug_request(): ``case VIRTIO_MEM_RESP_ERROR:
    rc = -EINVAL;``; virtio_mem_run_wq(): ``dev_err(&vm->vdev->dev, "unknown error, marking
    device broken: %d\\n", rc);``
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable",
                           requested=128 * MiB)
    wait_settled(machine)
    dev = machine.devices["vm0"]
    # a device state that disagrees with the guest: memory17 plugged, memory16 not
    state = dev.save()
    bits = bytearray(dev.nb_blocks)
    bits[64:128] = b"\x01" * 64
    import base64

    packed = bytes(int("".join(str(b) for b in reversed(bits[i:i + 8])), 2)
                   for i in range(0, len(bits), 8))
    state["bitmap"] = base64.b64encode(packed).decode("ascii")
    machine.call(lambda: dev.load(state))
    machine.set_requested_size("vm0", 256 * MiB)
    assert machine.wait_until(lambda m: m.guest_states["vm0"] == "broken", 10)
    assert "ERROR" in responses(machine)
    assert any("unknown error, marking device broken: -22" in line for line in machine.console)


def test_busy_and_enomem_use_the_timer_enospc_does_not(make_machine: MachineFactory) -> None:
    """BUSY (-ETXTBSY), -EBUSY and -ENOMEM restart the work from the retry timer, doubling each
    time; -ENOSPC waits for a config change or onlined memory. drivers/virtio/virtio_mem.c,
    virtio_mem_run_wq(): ``case -ENOSPC:`` ``break;`` versus ``hrtimer_start(&vm->retry_timer,
    ms_to_ktime(vm->retry_timer_ms), HRTIMER_MODE_REL);``; virtio_mem_timer_expired():
    ``vm->retry_timer_ms = min_t(unsigned int, vm->retry_timer_ms * 2,
    VIRTIO_MEM_RETRY_TIMER_MAX_MS);``
    """
    machine = machine_with(make_machine, "memhp_default_state=online_movable "
                           "virtio_mem.retry_ms=30", boot_ram=64 * MiB, size=8 * GiB,
                           requested=0)
    wait_settled(machine)
    work = Workload(machine)
    snap = machine.snapshot().guest
    assert snap is not None
    hog = work.alloc((snap.boot_free - 256) * 4096, target="boot")  # 1M left: no memory map
    seq = machine.bus.last_seq
    machine.set_requested_size("vm0", 256 * MiB)
    assert machine.wait_until(lambda m: m.guest_states["vm0"] == "no-memory", 10)
    assert machine.wait_until(lambda m: len(requests(m, seq)) >= 8, 10)
    stamps = [r.time_ns for r in machine.bus.since(seq)
              if isinstance(r.event, VirtioRequest) and r.event.type == "PLUG"]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[-1] > gaps[0]  # backoff
    work.free(hog)  # the next retry finds room for the memory map
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 256 * MiB
                              and m.guest_states["vm0"] == "idle", 10)
