"""The 2017 RFC's section V walkthrough, in its sizes, on the real guest.

4 GiB of boot memory on two NUMA nodes; reg0 on node 0 with 4 GiB of 8 GiB plugged, reg1 on
node 1 with 3 GiB of 8 GiB. Resize reg0 to 2 GiB, to 8 GiB, then to 0 while the guest holds
164 MiB of unmovable memory in it: the last step stops short with exactly the blocks the guest
could not empty still plugged (the RFC's "Request status: vm-oom", 171966464 bytes).

The RFC's Fedora guest onlined hot-added memory with a udev rule as plain "online", i.e. to
ZONE_NORMAL ("no need to online virtio-mem memory as online-movable"): vmemlab's guest has no
udev, so it boots with ``memhp_default_state=online`` for the same zone. (With online_movable
Linux would have moved the pinned pages out of ZONE_MOVABLE first and the unplug would finish.)

The RFC ran x86 QEMU (its command line says ``-machine pc``), so the machine follows x86 QEMU
7.2's rules: ``VIRTIO_MEM_USABLE_EXTENT (2 * (128 * MiB))`` and the device area after the RAM
above 4 GiB (pc_piix.c: "qemu -M pc -m 4G (new default) -> 3072M low, 1024M high"), which puts
reg0 at the RFC's 0x140000000.
"""

from __future__ import annotations

from emulator import Machine, MachineConfig, MemoryDeviceConfig, NumaNodeConfig
from emulator.config import GiB, MiB
from emulator.workload import Workload
from tests.conftest import MachineFactory, wait_settled


def rfc_config() -> MachineConfig:
    return MachineConfig(
        machine="pc", boot_ram=4 * GiB, maxmem=20 * GiB, smp=4,
        cmdline="memhp_default_state=online",
        nodes=[NumaNodeConfig(0, [0, 1]), NumaNodeConfig(1, [2, 3])],
        devices=[
            MemoryDeviceConfig(id="reg0", memdev="mem0", size=8 * GiB, node=0,
                               requested_size=4 * GiB),
            MemoryDeviceConfig(id="reg1", memdev="mem1", size=8 * GiB, node=1,
                               requested_size=3 * GiB),
        ],
    )


def node_sizes_mb(machine: Machine) -> list[int]:
    """``info numa``'s "node N size" (boot RAM + plugged), in MB."""
    return [(n.boot_ram + n.plugged) // MiB for n in machine.snapshot().nodes]


def test_rfc_section_v_walkthrough(make_machine: MachineFactory) -> None:
    machine = make_machine(rfc_config())
    wait_settled(machine, timeout=60)
    # step 2: the RFC's addresses and sizes
    assert machine.layout.machine.qemu_machine == "pc-i440fx-7.2"
    assert machine.devices["reg0"].usable_region_size == 4 * GiB + 256 * MiB
    assert machine.devices["reg0"].addr == 0x140000000
    assert machine.devices["reg1"].addr == 0x340000000
    assert node_sizes_mb(machine) == [6144, 5120]

    # step 3: reg0 → 2 GiB
    machine.set_requested_size("reg0", 2 * GiB)
    wait_settled(machine, "reg0", timeout=60)
    assert machine.devices["reg0"].plugged_size == 2 * GiB
    assert node_sizes_mb(machine) == [4096, 5120]

    # step 4: reg0 → 8 GiB
    machine.set_requested_size("reg0", 8 * GiB)
    wait_settled(machine, "reg0", timeout=60)
    assert machine.devices["reg0"].plugged_size == 8 * GiB
    assert node_sizes_mb(machine) == [10240, 5120]

    # step 5: the guest pins 164 MiB in reg0, then reg0 → 0 stops short
    work = Workload(machine)
    pinned = work.alloc(164 * MiB, unmovable=True, target="reg0")
    assert pinned.pages == 164 * MiB // 4096
    machine.set_requested_size("reg0", 0)
    wait_settled(machine, "reg0", timeout=60)
    snap = machine.snapshot()
    dev = snap.device("reg0")
    assert dev.driver_state == "stopped-short"
    assert dev.plugged_size == 171966464  # 164 MiB, as in the RFC
    assert node_sizes_mb(machine) == [2212, 5120]
    # exactly the blocks holding unmovable data are still plugged
    assert snap.guest is not None and snap.guest.devices[0] is not None
    usage = snap.guest.devices[0].usage
    pinned_blocks = {i for i, (_mov, unmov, _free, _st) in enumerate(usage) if unmov}
    plugged_blocks = {i for i, p in enumerate(dev.bitmap) if p}
    assert plugged_blocks == pinned_blocks
    assert len(plugged_blocks) == 82
    assert work.verify(pinned) == (0, pinned.pages)
    # reg1 on node 1 never moved
    assert machine.devices["reg1"].plugged_size == 3 * GiB
