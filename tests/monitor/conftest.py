"""Fixtures for the monitor tests: real machines built from QEMU-style command lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from control import control_for
from emulator import Machine
from monitor.cmdline import parse_args
from monitor.commands import MonitorContext, context_for
from monitor.qmp import MonitorServer

# the reference machine of the transcripts (01..04): q35 (x86 QEMU 7.2's rules: memaddr
# 0x100000000, unplugged-inaccessible auto -> off), 1G boot RAM, 2G backend, 512M requested
REFERENCE = ["-machine", "q35", "-m", "1G,maxmem=4G", "-smp", "2",
             "-object", "memory-backend-ram,id=mem0,size=2G",
             "-device", "virtio-mem-pci,id=vm0,memdev=mem0,node=0,requested-size=512M"]
NUMA = ["-m", "1G,maxmem=8G", "-smp", "2",
        "-object", "memory-backend-ram,id=m0,size=512M",
        "-object", "memory-backend-ram,id=m1,size=512M",
        "-numa", "node,nodeid=0,cpus=0,memdev=m0", "-numa", "node,nodeid=1,cpus=1,memdev=m1",
        "-object", "memory-backend-ram,id=mem0,size=2G",
        "-device", "virtio-mem-pci,id=vm0,memdev=mem0,node=0,requested-size=512M",
        "-object", "memory-backend-ram,id=mem1,size=2G",
        "-device", "virtio-mem-pci,id=vm1,memdev=mem1,node=1,requested-size=256M"]

Builder = Callable[..., Machine]


def settled(machine: Machine) -> bool:
    """Every device's driver has finished reacting (control/settle.py)."""
    return control_for(machine).settled()


def wait_settled(machine: Machine, timeout: float = 30.0) -> None:
    assert machine.wait_until(settled, timeout), (
        {d: (machine.guest_states.get(d), v.plugged_size, v.requested_size)
         for d, v in machine.devices.items()})


@pytest.fixture
def build() -> Iterator[Builder]:
    """``build(argv, start=True, settle=True)`` -> a running machine, closed at the end."""
    machines: list[Machine] = []

    def make(argv: list[str] | None = None, *, start: bool = True, settle: bool = True,
             incoming: bool = False) -> Machine:
        opts = parse_args(list(argv if argv is not None else REFERENCE))
        machine = Machine(opts.config, incoming=incoming)
        machines.append(machine)
        ctx = context_for(machine)
        ctx.quit_handler = lambda: None
        if start:
            machine.start()
            if settle:
                wait_settled(machine)
        return machine

    yield make
    for machine in machines:
        context_for(machine).close()
        machine.close()


@pytest.fixture
def machine(build: Builder) -> Machine:
    return build()


@pytest.fixture
def ctx(machine: Machine) -> MonitorContext:
    return context_for(machine)


@pytest.fixture
def server(ctx: MonitorContext) -> Iterator[MonitorServer]:
    srv = MonitorServer(ctx)
    yield srv
    srv.close()


def readline_echo(typed: bytes) -> bytes:
    """What QEMU's monitor sends back while ``typed`` + Enter arrive on a ``-monitor`` socket.

    ``util/readline.c``: each byte goes through ``readline_handle_byte``, which ends in
    ``readline_update``; for a byte appended at the end that prints ``\\033[D`` once per byte
    shown so far, the whole line, ``\\033[K``. Enter prints ``\\n``, which the monitor sends as
    ``\\r\\n``.
    """
    out = b"".join(b"\033[D" * (k - 1) + typed[:k] + b"\033[K"
                   for k in range(1, len(typed) + 1))
    return out + b"\r\n"
