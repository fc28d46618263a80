"""The 2017 RFC's section V, steps 1-5, end to end through HMP with the RFC's own sizes.

Step 1 is the RFC's command line (options with no meaning here are accepted with a note).
Before step 5 the guest pins 164 MiB in reg0 (the RFC's guest could not free 164M), so the
unplug to 0 stops short: ``node 0 size: 2212 MB``, ``Request status: vm-oom`` and
``size: 171966464`` -- the RFC's numbers. ``info numa`` and ``info memory-devices`` are
checked after every step (in the shipped formats: ``plugged:`` lines, ``memaddr``).

The RFC's Fedora guest onlined hot-added memory with a udev rule, as plain "online"
(ZONE_NORMAL); vmemlab's guest has no udev, so ``memhp_default_state=online`` joins the RFC's
``-append``. Without it Linux leaves the memory offline and stops adding at 1 GiB.
"""

from __future__ import annotations

import shlex

from emulator import Machine
from monitor import run_hmp
from monitor.cmdline import parse_args
from monitor.commands import context_for

from .test_cmdline import RFC_LINE

RFC_GUEST_LINE = RFC_LINE.replace('rd.lvm=0"', 'rd.lvm=0 memhp_default_state=online"')

GiB = 1 << 30


def devices(reg0_req: int, reg0: int, reg1_req: int = 3 * GiB, reg1: int = 3 * GiB) -> str:
    out = ""
    for dev, addr, node, req, size, mem in (("reg0", 0x140000000, 0, reg0_req, reg0, "mem0"),
                                            ("reg1", 0x340000000, 1, reg1_req, reg1, "mem1")):
        out += (f'Memory device [virtio-mem]: "{dev}"\n  memaddr: 0x{addr:x}\n  node: {node}\n'
                f"  requested-size: {req}\n  size: {size}\n  max-size: 8589934592\n"
                f"  block-size: 2097152\n  memdev: /objects/{mem}\n")
    return out


def numa(node0_mb: int, plugged0_mb: int) -> str:
    return (f"2 nodes\nnode 0 cpus: 0 1\nnode 0 size: {node0_mb} MB\n"
            f"node 0 plugged: {plugged0_mb} MB\n"
            "node 1 cpus: 2 3\nnode 1 size: 5120 MB\nnode 1 plugged: 3072 MB\n")


def wait(machine: Machine, reg0: int, state: str = "idle") -> None:
    assert machine.wait_until(
        lambda m: m.devices["reg0"].plugged_size == reg0 and m.guest_states.get("reg0") == state
        and m.devices["reg1"].plugged_size == 3 * GiB and m.guest_states.get("reg1") == "idle",
        60), (machine.guest_states, machine.devices["reg0"].plugged_size)


def test_rfc_section_v() -> None:
    # 1. Starting a guest with virtio-mem memory (the RFC's command line: -machine pc, so x86
    #    QEMU 7.2's rules -- VIRTIO_MEM_USABLE_EXTENT (2 * (128 * MiB)) -- and its addresses)
    opts = parse_args(shlex.split(RFC_GUEST_LINE))
    machine = Machine(opts.config)
    assert machine.layout.machine.name == "pc"
    try:
        context_for(machine).quit_handler = lambda: None
        machine.start()
        wait(machine, 4 * GiB)
        # 2. Listing current memory assignment
        assert run_hmp(machine, "info memory-devices") == devices(4 * GiB, 4 * GiB)
        assert run_hmp(machine, "info numa") == numa(6144, 4096)
        # 3. Resize a virtio-mem device: unplugging memory
        assert run_hmp(machine, "virtio-mem reg0 2048") == ""
        wait(machine, 2 * GiB)
        assert run_hmp(machine, "info numa") == numa(4096, 2048)
        assert run_hmp(machine, "info memory-devices") == devices(2 * GiB, 2 * GiB)
        # 4. Resize a virtio-mem device: plugging memory
        assert run_hmp(machine, "virtio-mem reg0 8192") == ""
        wait(machine, 8 * GiB)
        assert run_hmp(machine, "info numa") == numa(10240, 8192)
        assert run_hmp(machine, "info memory-devices") == devices(8 * GiB, 8 * GiB)
        assert run_hmp(machine, "info virtio-mem reg0") == (
            "Status: ready\nRequest status: finished\nPage size: 2097152 bytes\n")
        # the guest holds memory it cannot give back (the RFC's "out of memory")
        out = run_hmp(machine, "guest pin 164M reg0")
        assert out == "allocation 1: 41984 pages (164 MiB) unmovable\n", (
            out + "\n".join(list(machine.console)[-4:]))
        # 5. Resize a virtio-mem device: try to unplug all memory
        assert run_hmp(machine, "virtio-mem reg0 0") == ""
        wait(machine, 171966464, "stopped-short")
        assert run_hmp(machine, "info numa") == numa(2212, 164)
        assert run_hmp(machine, "info virtio-mem reg0") == (
            "Status: ready\nRequest status: vm-oom\nPage size: 2097152 bytes\n")
        assert run_hmp(machine, "info memory-devices") == devices(0, 171966464)
    finally:
        machine.close()
