"""The guest reads vmemlab's experimental memory type and prefers a RAM_HUGE device for
huge-page allocations (issue 14 §1; docs/extensions.md)."""

from __future__ import annotations

import re
import shlex

from control import control_for
from emulator.machine import Machine
from monitor.cmdline import parse_args
from monitor.hmp import run_hmp
from tests.conftest import MachineFactory

TWO = ("-m 128M,maxmem=4G -object memory-backend-ram,id=mem0,size=512M "
       "-device virtio-mem-pci,id=vm0,memdev=mem0,requested-size=256M{t0} "
       "-object memory-backend-memfd,id=mem1,size=512M,hugetlb=on,hugetlbsize=2M "
       "-device virtio-mem-pci,id=vm1,memdev=mem1,requested-size=256M{t1}")


def _machine(make_machine: MachineFactory, t0: str = "", t1: str = "") -> Machine:
    opts = parse_args(shlex.split(TWO.format(t0=t0, t1=t1)))
    machine = make_machine(opts.config)
    assert control_for(machine).wait_settled(30)
    return machine


def _movable(machine: Machine, dev: str) -> int:
    found = re.search(rf"{dev} pages: \d+ free, (\d+) movable", run_hmp(machine, "info guest"))
    assert found is not None
    return int(found.group(1))


def test_huge_allocations_prefer_the_ram_huge_device(make_machine: MachineFactory) -> None:
    machine = _machine(make_machine, ",x-memory-type=ram", ",x-memory-type=ram-huge")
    console = "\n".join(machine.console)
    assert "virtio_mem virtio0: memory type: RAM (vmemlab experiment)" in console
    assert "virtio_mem virtio1: backed by huge pages: huge-page allocations will prefer this " \
           "device" in console
    assert run_hmp(machine, "guest alloc 64M huge").endswith("movable, huge pages\n")
    assert (_movable(machine, "vm0"), _movable(machine, "vm1")) == (0, 16384)
    run_hmp(machine, "guest alloc 64M")  # an ordinary one: the zonelist's order, vm0 first
    assert (_movable(machine, "vm0"), _movable(machine, "vm1")) == (16384, 16384)


def test_without_types_a_huge_allocation_is_an_ordinary_one(
        make_machine: MachineFactory) -> None:
    machine = _machine(make_machine)
    assert "memory type" not in "\n".join(machine.console)
    run_hmp(machine, "guest alloc 64M huge")
    assert (_movable(machine, "vm0"), _movable(machine, "vm1")) == (16384, 0)


def test_ram_huge_without_huge_pages_warns() -> None:
    opts = parse_args(shlex.split(TWO.format(t0=",x-memory-type=ram-huge", t1="")))
    assert any("'x-memory-type' is 'ram-huge' but the memdev has no huge pages" in w
               for w in opts.warnings)
