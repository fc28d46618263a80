"""hugetlb-backed virtio-mem (issue 14 §2; reference/qemu-transcripts/13_hugetlb.txt): QEMU's
checks and texts, UNPLUGGED_INACCESSIBLE's 'auto' for a backend without a shared zero page,
and the host's accounting: a read of unplugged memory populates whole huge pages."""

from __future__ import annotations

import shlex

import pytest

from control import control_for
from emulator.config import MiB
from emulator.huge_pages import HugePageMemory
from emulator.machine import Machine
from monitor.cmdline import CmdlineError, parse_args
from monitor.hmp import run_hmp
from tests.conftest import MachineFactory

BASE = ("-machine q35 -m 128M,maxmem=4G -object memory-backend-memfd,id=mem0,size=1G,"
        "hugetlb=on,hugetlbsize=2M -device virtio-mem-pci,id=vm0,memdev=mem0,node=0,"
        "requested-size=200M")


def _machine(make_machine: MachineFactory, extra: str = "") -> Machine:
    opts = parse_args(shlex.split(BASE + extra))
    machine = make_machine(opts.config)
    assert control_for(machine).wait_settled(30)
    return machine


def test_block_size_must_be_at_least_the_huge_page_size() -> None:
    with pytest.raises(CmdlineError, match=r"'block-size' property has to be at least the "
                                           r"page size \(0x200000\)"):
        parse_args(shlex.split(BASE + ",block-size=1M"))
    assert parse_args(shlex.split(BASE + ",block-size=4M")).config.devices[0].block_size == 4 * MiB


def test_memfd_size_must_be_a_multiple_of_the_huge_page() -> None:
    with pytest.raises(CmdlineError, match="failed to resize memfd to 1074790400: Invalid "
                                           "argument"):
        parse_args(shlex.split(BASE.replace("size=1G,", "size=1025M,")))


def test_default_block_size_follows_the_page_size() -> None:
    cfg = parse_args(shlex.split(BASE.replace("hugetlbsize=2M", "hugetlbsize=1G")
                                 .replace("requested-size=200M", "requested-size=0"))).config
    assert (cfg.devices[0].page_size, cfg.devices[0].block_size) == (1 << 30, 1 << 30)
    file_cfg = parse_args(shlex.split(
        "-m 128M,maxmem=4G -object memory-backend-file,id=mem0,size=1G,"
        "mem-path=/dev/hugepages/vm -device virtio-mem-pci,id=vm0,memdev=mem0")).config
    assert file_cfg.devices[0].page_size == 2 * MiB


def test_auto_turns_unplugged_inaccessible_on_and_off_warns(
        make_machine: MachineFactory) -> None:
    machine = _machine(make_machine)
    assert machine.devices["vm0"].unplugged_inaccessible_negotiated
    assert run_hmp(machine, "info ramblock").splitlines()[1].split()[:3] == [
        "0000:00:03.0/mem0", "2", "MiB"]
    warned = parse_args(shlex.split(BASE + ",unplugged-inaccessible=off")).warnings
    assert warned and warned[0].endswith("'unplugged-inaccessible' property set to 'off' with "
                                         "a memdev that does not support the shared zeropage.")


def test_reading_unplugged_memory_populates_whole_huge_pages(
        make_machine: MachineFactory) -> None:
    """200M plugged in two 128M memory blocks: 56M of the second are unplugged. An old kdump
    (allowed when UNPLUGGED_INACCESSIBLE is off) reads them all: 28 huge pages populated."""
    machine = _machine(make_machine, ",unplugged-inaccessible=off")
    region = machine.regions["vm0"]
    assert isinstance(region, HugePageMemory)
    dev = machine.devices["vm0"]
    unplugged = 256 * MiB - dev.plugged_size
    before = region.resident_bytes()
    run_hmp(machine, "guest dump --legacy vm0")
    assert region.resident_bytes() - before == unplugged == 56 * MiB
    per_block = region.resident_per_block(dev.block_size)
    assert all(b in (0, 2 * MiB) for b in per_block)  # whole huge pages, nothing in between


def test_linux_kdump_reads_no_unplugged_memory(make_machine: MachineFactory) -> None:
    machine = _machine(make_machine)  # auto: UNPLUGGED_INACCESSIBLE on
    region = machine.regions["vm0"]
    before = region.resident_bytes()
    run_hmp(machine, "guest dump vm0")  # STATE requests: plugged blocks only
    dev = machine.devices["vm0"]
    populated = region.resident_bytes() - before
    assert populated <= dev.plugged_size  # the plugged ones it read, never the unplugged
    bs = dev.block_size
    resident = region.resident_per_block(bs)
    assert not any(resident[b] for b in range(dev.nb_blocks) if not dev.is_plugged(b))


def test_a_host_read_populates_one_huge_page(make_machine: MachineFactory) -> None:
    machine = _machine(make_machine)
    region = machine.regions["vm0"]
    before = region.resident_bytes()
    assert run_hmp(machine, "xp /2gx 0x13fe00000").startswith("000000013fe00000: 0x0")
    assert region.resident_bytes() - before == 2 * MiB  # transcript 13: Free 600 -> 599


def test_a_touched_plugged_page_costs_its_whole_huge_page(make_machine: MachineFactory) -> None:
    machine = _machine(make_machine)
    region = machine.regions["vm0"]
    assert region.resident_bytes() == 0
    run_hmp(machine, "guest alloc 4K vm0")
    assert region.resident_bytes() % (2 * MiB) == 0 and region.resident_bytes() > 0
