"""HMP transcript tests: every command against the QEMU 7.2 reference formats.

The expected texts are copied verbatim from ``reference/qemu-transcripts`` (02 runtime errors,
01 lifecycle, 03 reset, 04 migration, 07 NUMA). The reference machine is the transcripts' own
``-machine q35`` (x86 QEMU 7.2's rules: the device area at 0x100000000); the NUMA machine is
the default arm ``virt`` (the device area right after boot RAM).
"""

from __future__ import annotations

import json
import time

from emulator import Machine
from monitor import run_hmp
from monitor.hmp import COMMANDS, INFO_COMMANDS

from .conftest import NUMA, Builder, wait_settled

HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
        "and exabytes, respectively.\n")
EXPECTS = "Error: Parameter 'requested-size' expects a non-negative number below 2^64\n" + HINT

# 02_runtime_errors.txt, HMP part: (command, exact output)
RUNTIME_ERRORS = [
    ("qom-set vm0 requested-size 3M",
     "Error: 'requested-size' has to be multiples of 'block-size' (0x200000)\n"),
    ("qom-set vm0 requested-size 1025M",
     "Error: 'requested-size' has to be multiples of 'block-size' (0x200000)\n"),
    ("qom-set vm0 requested-size 3G",
     "Error: 'requested-size' cannot exceed the memory backend size(0x80000000)\n"),
    ("qom-set vm0 requested-size 4G",
     "Error: 'requested-size' cannot exceed the memory backend size(0x80000000)\n"),
    ("qom-set vm0 requested-size 2049M",
     "Error: 'requested-size' has to be multiples of 'block-size' (0x200000)\n"),
    ("qom-set vm0 requested-size -1", EXPECTS),
    ("qom-set vm0 requested-size -512M", EXPECTS),
    ("qom-set vm0 requested-size abc", EXPECTS),
    ("qom-set vm0 requested-size 1T",
     "Error: 'requested-size' cannot exceed the memory backend size(0x80000000)\n"),
    ("qom-set vm0 requested-size 99999999999999999999",
     "Error: Value '99999999999999999999' is out of range for parameter 'requested-size'\n"),
    ("qom-set vm0 requested-size ''", EXPECTS),
    ("qom-set vm9 requested-size 1G", "Error: Device 'vm9' not found\n"),
    ("qom-set vm0 foo 1G", "Error: Property 'virtio-mem-pci.foo' not found\n"),
    ("qom-set vm0 size 1G", "Error: Property 'virtio-mem.size' is not writable\n"),
    ("qom-set vm0 block-size 4M", "Error: 'block-size' cannot be changed\n"),
    ("qom-set vm0 memdev mem0",
     "Error: Attempt to set link property 'memdev' on device '(null)' (type 'virtio-mem') "
     "after it was realized\n"),
    ("qom-set /machine/peripheral/vm0/virtio-backend unplugged-inaccessible on",
     "Error: Attempt to set property 'unplugged-inaccessible' on anonymous device "
     "(type 'virtio-mem') after it was realized\n"),
    ('qom-set -j vm0 requested-size "512M"',
     "Error: Parameter 'requested-size' expects uint64\n"),
    ("qom-set -j vm0 requested-size -1",
     "Error: 'requested-size' has to be multiples of 'block-size' (0x200000)\n"),
    ("qom-get vm9 size", "Error: Device 'vm9' not found\n"),
    ("qom-get vm0 foo", "Error: Property 'virtio-mem-pci.foo' not found\n"),
    ("qom-get mem0 size", "2147483648\n"),
    ("qom-set", 'qom-set: string expected\nTry "help qom-set" for more information\n'),
    ("qom-set vm0", 'qom-set: string expected\nTry "help qom-set" for more information\n'),
    ("qom-set vm0 requested-size",
     'qom-set: string expected\nTry "help qom-set" for more information\n'),
    ("device_del vm0", "Error: Bus 'pcie.0' does not support hotplugging\n"),
    ("foo", "unknown command: 'foo'\n"),
    ("info foo", "unknown command: 'info foo'\n"),
]


def memory_devices(addr: int, requested: int, size: int, dev: str = "vm0", node: int = 0,
                   memdev: str = "mem0", max_size: int = 2147483648,
                   block: int = 2097152) -> str:
    return (f'Memory device [virtio-mem]: "{dev}"\n  memaddr: 0x{addr:x}\n  node: {node}\n'
            f"  requested-size: {requested}\n  size: {size}\n  max-size: {max_size}\n"
            f"  block-size: {block}\n  memdev: /objects/{memdev}\n")


def settle_to(machine: Machine, size: int, dev: str = "vm0") -> None:
    assert machine.wait_until(
        lambda m: m.devices[dev].plugged_size == size and m.guest_states.get(dev) == "idle", 30)


def test_runtime_errors_byte_for_byte(machine: Machine) -> None:
    before = run_hmp(machine, "qom-get vm0 requested-size")
    for command, expected in RUNTIME_ERRORS:
        assert run_hmp(machine, command) == expected, command
    # a failed qom-set leaves requested-size unchanged
    assert run_hmp(machine, "qom-get vm0 requested-size") == before


def test_lifecycle_views(machine: Machine) -> None:
    """01: info memory-devices / numa / memory_size_summary / qom-get after boot and resizes."""
    assert run_hmp(machine, "info memory-devices") == memory_devices(0x100000000, 536870912,
                                                                     536870912)
    assert run_hmp(machine, "info numa") == (
        "1 nodes\nnode 0 cpus: 0 1\nnode 0 size: 1536 MB\nnode 0 plugged: 512 MB\n")
    assert run_hmp(machine, "info memory_size_summary") == (
        "base memory: 1073741824\nplugged memory: 536870912\n")
    assert run_hmp(machine, "qom-get vm0 size") == "536870912\n"
    assert run_hmp(machine, "qom-get vm0 block-size") == "2097152\n"
    assert run_hmp(machine, "qom-get /machine/peripheral/vm0/virtio-backend "
                            "unplugged-inaccessible") == '"off"\n'
    assert run_hmp(machine, "qom-get /machine/peripheral/vm0/virtio-backend prealloc") == \
        "false\n"
    assert run_hmp(machine, "qom-set vm0 requested-size 1G") == ""
    settle_to(machine, 1 << 30)
    assert run_hmp(machine, "info memory-devices") == memory_devices(0x100000000, 1073741824,
                                                                     1073741824)
    assert run_hmp(machine, "info numa") == (
        "1 nodes\nnode 0 cpus: 0 1\nnode 0 size: 2048 MB\nnode 0 plugged: 1024 MB\n")
    assert run_hmp(machine, "qom-set vm0 requested-size 256M") == ""
    settle_to(machine, 256 << 20)
    assert run_hmp(machine, "info numa").endswith("node 0 size: 1280 MB\nnode 0 plugged: 256 MB\n")
    assert run_hmp(machine, "qom-set vm0 requested-size 0") == ""
    settle_to(machine, 0)
    assert run_hmp(machine, "info memory-devices") == memory_devices(0x100000000, 0, 0)
    assert run_hmp(machine, "info memory_size_summary") == (
        "base memory: 1073741824\nplugged memory: 0\n")


def test_accepted_spellings(machine: Machine) -> None:
    """02c: 0x…, 1.5G, the full and the backend path, -j with a number, same value again."""
    for command, size in [("qom-set vm0 requested-size 0x20000000", 536870912),
                          ("qom-set vm0 requested-size 1.5G", 1610612736),
                          ("qom-set /machine/peripheral/vm0 requested-size 2G", 2147483648),
                          ("qom-set /machine/peripheral/vm0/virtio-backend requested-size 256M",
                           268435456),
                          ("qom-set -j vm0 requested-size 134217728", 134217728),
                          ("qom-set vm0 requested-size 128M", 134217728)]:
        assert run_hmp(machine, command) == "", command
        assert run_hmp(machine, "qom-get vm0 requested-size") == f"{size}\n"
        settle_to(machine, size)


def test_qom_list(machine: Machine) -> None:
    out = run_hmp(machine, "qom-list vm0").splitlines()
    assert out[:3] == ["type (string)", "parent_bus (link<bus>)", "realized (bool)"]
    assert "requested-size (size)" in out and out[-2:] == ["size (size)",
                                                           "virtio-backend (child<virtio-mem>)"]
    assert len(out) == 58
    backend = run_hmp(machine, "qom-list /machine/peripheral/vm0/virtio-backend").splitlines()
    assert backend[-4:] == ["prealloc (bool)", "block-size (size)", "size (size)",
                            "requested-size (size)"]
    assert len(backend) == 24
    assert run_hmp(machine, "qom-get vm0 type") == '"virtio-mem-pci"\n'
    assert run_hmp(machine, "qom-get vm0 memdev") == '"/objects/mem0"\n'
    assert "peripheral (child<container>)" in run_hmp(machine, "qom-list /machine")
    assert run_hmp(machine, "qom-list") == "/\n"
    assert run_hmp(machine, "info virtio") == (
        "/machine/peripheral/vm0/virtio-backend [virtio-mem]\n")


def test_status_stop_cont(machine: Machine) -> None:
    assert run_hmp(machine, "info status") == "VM status: running\n"
    assert run_hmp(machine, "stop") == ""
    assert run_hmp(machine, "info status") == "VM status: paused\n"
    assert run_hmp(machine, "cont") == ""
    assert run_hmp(machine, "info status") == "VM status: running\n"
    assert run_hmp(machine, "s") == "" and run_hmp(machine, "c") == ""


def test_prelaunch_status(build: Builder) -> None:
    machine = build(start=False)
    assert run_hmp(machine, "info status") == "VM status: paused (prelaunch)\n"
    assert run_hmp(machine, "info memory-devices") == memory_devices(0x100000000, 536870912, 0)
    assert run_hmp(machine, "cont") == ""
    wait_settled(machine)
    assert run_hmp(machine, "info status") == "VM status: running\n"


def test_system_reset(machine: Machine) -> None:
    """03: reset unplugs everything at once and keeps requested-size; the guest replugs."""
    assert run_hmp(machine, "system_reset") == ""
    out = run_hmp(machine, "info memory-devices")
    assert "requested-size: 536870912\n" in out
    # the rebooted guest replugs within milliseconds here (QEMU's Linux takes seconds)
    wait_settled(machine)
    assert run_hmp(machine, "info memory-devices") == memory_devices(0x100000000, 536870912,
                                                                     536870912)
    assert run_hmp(machine, "system_reset") == ""
    assert run_hmp(machine, "qom-set vm0 requested-size 768M") == ""
    settle_to(machine, 805306368)


def test_stop_then_reset_shows_zero(machine: Machine) -> None:
    assert run_hmp(machine, "stop") == ""
    assert run_hmp(machine, "system_reset") == ""
    assert "size: 0\n" in run_hmp(machine, "info memory-devices")
    assert run_hmp(machine, "info numa").endswith("node 0 size: 1024 MB\nnode 0 plugged: 0 MB\n")
    assert run_hmp(machine, "cont") == ""
    wait_settled(machine)


def test_stop_then_reset_is_prelaunch(machine: Machine) -> None:
    run_hmp(machine, "stop")
    run_hmp(machine, "system_reset")
    assert run_hmp(machine, "info status") == "VM status: paused (prelaunch)\n"


def test_numa_two_nodes(build: Builder) -> None:
    """07b/07c."""
    machine = build(NUMA)
    assert run_hmp(machine, "info numa") == (
        "2 nodes\nnode 0 cpus: 0\nnode 0 size: 1024 MB\nnode 0 plugged: 512 MB\n"
        "node 1 cpus: 1\nnode 1 size: 768 MB\nnode 1 plugged: 256 MB\n")
    assert run_hmp(machine, "info memory-devices") == (
        memory_devices(0x80000000, 536870912, 536870912)
        + memory_devices(0x100000000, 268435456, 268435456, "vm1", 1, "mem1"))
    assert run_hmp(machine, "info virtio") == ("/machine/peripheral/vm1/virtio-backend "
                                               "[virtio-mem]\n/machine/peripheral/vm0/"
                                               "virtio-backend [virtio-mem]\n")
    assert run_hmp(machine, "qom-set vm1 requested-size 1G") == ""
    assert run_hmp(machine, "qom-set vm0 requested-size 0") == ""
    wait_settled(machine)
    assert run_hmp(machine, "info numa") == (
        "2 nodes\nnode 0 cpus: 0\nnode 0 size: 512 MB\nnode 0 plugged: 0 MB\n"
        "node 1 cpus: 1\nnode 1 size: 1536 MB\nnode 1 plugged: 1024 MB\n")


def test_migration(build: Builder, tmp_path: object) -> None:
    """04: migrate "exec:cat > FILE", info migrate / status on both sides, -incoming."""
    import pathlib

    src = build()
    img = pathlib.Path(str(tmp_path)) / "vm.img"
    assert run_hmp(src, "qom-set vm0 requested-size 768M") == ""
    settle_to(src, 805306368)
    assert run_hmp(src, "info migrate") == (
        "globals:\nstore-global-state: on\nonly-migratable: off\nsend-configuration: on\n"
        "send-section-footer: on\ndecompress-error-check: on\nclear-bitmap-shift: 18\n")
    assert run_hmp(src, f'migrate "exec:cat > {img}"') == ""
    info = run_hmp(src, "info migrate")
    assert "Migration status: completed\ntotal time: " in info
    lines = [line.split(":")[0] for line in info.splitlines()]
    assert lines[7:] == ["Migration status", "total time", "downtime", "setup", "transferred ram",
                         "throughput", "remaining ram", "total ram", "duplicate", "skipped",
                         "normal", "normal bytes", "dirty sync count", "page size",
                         "multifd bytes", "pages-per-second", "precopy ram", "downtime ram"]
    assert run_hmp(src, "info status") == "VM status: paused (postmigrate)\n"
    assert img.stat().st_size > 0

    from monitor.commands import context_for, incoming

    dst = build(start=False, incoming=True)
    assert run_hmp(dst, "info status") == "VM status: paused (inmigrate)\n"
    assert run_hmp(dst, "info memory-devices") == memory_devices(0x100000000, 536870912, 0)
    incoming(context_for(dst), f"exec:cat {img}")
    dst.start()
    assert run_hmp(dst, "info status") == "VM status: running\n"
    assert run_hmp(dst, "info migrate").endswith(
        "Migration status: completed\ntotal time: 0 ms\n")
    assert run_hmp(dst, "info memory-devices") == memory_devices(0x100000000, 805306368,
                                                                 805306368)
    assert run_hmp(dst, "qom-set vm0 requested-size 1G") == ""
    settle_to(dst, 1 << 30)
    assert run_hmp(src, 'migrate "exec:sh -c reboot"').startswith("Error: vmemlab runs no shell")
    assert run_hmp(src, 'migrate "tcp:1.2.3.4:5"') == \
        "Error: unknown migration protocol: tcp\n"


def test_rfc_commands(machine: Machine) -> None:
    assert run_hmp(machine, "info virtio-mem vm0") == (
        "Status: ready\nRequest status: finished\nPage size: 2097152 bytes\n")
    assert run_hmp(machine, "virtio-mem vm0 1024") == ""
    assert run_hmp(machine, "qom-get vm0 requested-size") == "1073741824\n"
    settle_to(machine, 1 << 30)
    assert run_hmp(machine, "virtio-mem vm9 1") == "Error: Device 'vm9' not found\n"
    assert run_hmp(machine, "virtio-mem vm0 3").startswith(
        "Error: 'requested-size' has to be multiples of 'block-size'")
    assert run_hmp(machine, "virtio-mem vm0") == (
        'virtio-mem: integer expected\nTry "help virtio-mem" for more information\n')
    assert run_hmp(machine, "info virtio-mem") == (
        'info virtio-mem: string expected\nTry "help info virtio-mem" for more information\n')


def test_guest_and_block_map(build: Builder) -> None:
    from .conftest import REFERENCE

    # ZONE_NORMAL: with the transcripts' online_movable, Linux would move pinned pages out of
    # vm0 first and the unplug would finish
    machine = build([*REFERENCE, "-append", "memhp_default_state=online"])
    out = run_hmp(machine, "guest pin 64M vm0")
    assert out == "allocation 1: 16384 pages (64 MiB) unmovable\n"
    assert run_hmp(machine, "guest alloc 32M movable boot") == \
        "allocation 2: 8192 pages (32 MiB) movable\n"
    assert run_hmp(machine, "guest verify 1") == "verified 16384 pages: 0 bad\n"
    assert run_hmp(machine, "qom-set vm0 requested-size 0") == ""
    assert machine.wait_until(lambda m: m.guest_states.get("vm0") == "stopped-short", 30)
    assert run_hmp(machine, "info virtio-mem vm0") == (
        "Status: ready\nRequest status: vm-oom\nPage size: 2097152 bytes\n")
    info = run_hmp(machine, "info guest")
    assert "1: 16384 pages (64 MiB) unmovable target vm0" in info
    assert "vm0: driver stopped-short" in info
    blocks = run_hmp(machine, "info virtio-mem-blocks vm0").splitlines()
    assert blocks[0].startswith("vm0: 1024 blocks of 2 MiB at 0x100000000")
    assert "plugged 32 (64 MiB)" in blocks[0]
    assert len(blocks) == 2 + 1024 // 64
    assert "".join(b.split()[1] for b in blocks[2:]).count("#") == 32
    assert run_hmp(machine, "guest free 1") == "freed 16384 pages\n"
    # OFFSET into vm0, an unplugged block: shipped QEMU lets the write through
    assert run_hmp(machine, "guest rogue-write 0x10000000 vm0") == (
        "write to 0x110000000 (vm0) went through: nothing protects unplugged memory; the host "
        "backs that page again (resident)\n")
    assert run_hmp(machine, "guest dump vm0").startswith("read ")
    assert run_hmp(machine, "guest frobnicate").startswith("Error: unknown guest command")
    assert run_hmp(machine, "guest alloc 1E") == "Error: guest alloc failed: ENOMEM\n"


def test_x_and_xp(machine: Machine) -> None:
    assert run_hmp(machine, "xp /2xg 0x40000000") == (
        "0000000040000000: 0x544f4f424d454d56 0x" + machine.read_memory(0x40000008, 8)[::-1].hex()
        + "\n")
    out = run_hmp(machine, "xp /5xw 0x40000000").splitlines()
    assert len(out) == 2 and out[0].startswith("0000000040000000: 0x4d454d56 0x544f4f42")
    assert run_hmp(machine, "x /4c 0x40000000") == "0000000040000000: 'V' 'M' 'E' 'M'\n"
    assert run_hmp(machine, "xp /2ub 0x40000000") == "0000000040000000:  86  77\n"
    assert run_hmp(machine, "xp /1dh 0x40000000") == "0000000040000000: 19798\n"
    assert run_hmp(machine, "xp /1xg 0x10").startswith("Error: Cannot access memory")
    assert run_hmp(machine, "xp").startswith("xp: integer expected\n")


def test_help_and_info_listing() -> None:
    from monitor.commands import MonitorContext
    from monitor.hmp import execute

    no_machine: MonitorContext = None  # type: ignore[assignment]  # help must need no machine
    out = execute(no_machine, "help")
    for cmd in COMMANDS:
        assert f"\n{cmd.name} " in "\n" + out
    assert execute(no_machine, "help qom-get") == "qom-get path property -- print QOM property\n"
    listing = execute(no_machine, "info")
    assert "info status  -- show the current VM status (running|paused)\n" in listing
    assert len(listing.splitlines()) == len(INFO_COMMANDS)


def test_quit_calls_handler(machine: Machine) -> None:
    from monitor.commands import context_for

    ctx = context_for(machine)
    called = []
    ctx.quit_handler = lambda: called.append(1)
    assert run_hmp(machine, "quit") == ""
    assert called == [1] and ctx.quitting


def test_qom_get_is_json(machine: Machine) -> None:
    for prop in ("size", "requested-size", "block-size", "memaddr", "node"):
        value = json.loads(run_hmp(machine, f"qom-get vm0 {prop}"))
        assert isinstance(value, int)
    assert time.time() > 0


def test_guest_without_driver(build: Builder) -> None:
    """-append modprobe.blacklist=virtio_mem: the device waits, nothing is plugged."""
    from .conftest import REFERENCE

    machine = build([*REFERENCE, "-append", "modprobe.blacklist=virtio_mem"], settle=False)
    assert machine.wait_until(lambda m: m.guest_booted, 10)
    time.sleep(0.2)
    assert run_hmp(machine, "info virtio-mem vm0") == (
        "Status: no guest driver\nRequest status: pending\nPage size: 2097152 bytes\n")
    assert run_hmp(machine, "info memory-devices") == memory_devices(0x100000000, 536870912, 0)
    assert "cmdline: 'modprobe.blacklist=virtio_mem'" in run_hmp(machine, "info guest")


def test_requested_size_above_backend_at_startup(build: Builder) -> None:
    """08: requested-size=3G with a 2G backend starts; the guest plugs all 2G; a later
    qom-set 3G is refused."""
    from .conftest import REFERENCE

    argv = [a.replace("requested-size=512M", "requested-size=3G") for a in REFERENCE]
    machine = build(argv, settle=False)
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 2 << 30, 30)
    assert run_hmp(machine, "info memory-devices") == memory_devices(0x100000000, 3221225472,
                                                                     2147483648)
    # the driver cannot reach 3G: no memory block is left to add, Linux's -ENOSPC (no retry)
    assert machine.wait_until(lambda m: m.guest_states.get("vm0") == "no-space", 30)
    assert run_hmp(machine, "info virtio-mem vm0") == (
        "Status: ready\nRequest status: stalled (no space to add memory)\n"
        "Page size: 2097152 bytes\n")
    assert run_hmp(machine, "qom-set vm0 requested-size 3G") == (
        "Error: 'requested-size' cannot exceed the memory backend size(0x80000000)\n")
