"""Shared fixtures: real machines running the real guest image."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from control import control_for
from emulator import Machine, MachineConfig, MemoryDeviceConfig
from emulator.config import MiB

MachineFactory = Callable[..., Machine]


def small_config(**overrides: object) -> MachineConfig:
    """A machine that boots in milliseconds: 64 MiB boot RAM, one 512 MiB device."""
    device = MemoryDeviceConfig(id="vm0", memdev="mem0", size=512 * MiB,
                                requested_size=128 * MiB)
    cfg = MachineConfig(boot_ram=64 * MiB, devices=[device])
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture
def make_machine() -> Iterator[MachineFactory]:
    """Build and start machines; every one is closed when the test ends."""
    machines: list[Machine] = []

    def build(config: MachineConfig | None = None, *, start: bool = True,
              **kwargs: Any) -> Machine:
        machine = Machine(config or small_config(), **kwargs)
        machines.append(machine)
        if start:
            machine.start()
        return machine

    yield build
    for machine in machines:
        machine.close()


def settled(machine: Machine, dev_id: str = "vm0") -> bool:
    """The guest driver has finished reacting (control/settle.py has the one definition)."""
    return control_for(machine).settled(dev_id)


def wait_settled(machine: Machine, *dev_ids: str, timeout: float = 30.0) -> None:
    ids = dev_ids or tuple(machine.devices)
    ok = machine.wait_until(lambda m: all(settled(m, d) for d in ids), timeout)
    if not ok:
        states = {
            d: (machine.guest_states.get(d), machine.devices[d].plugged_size,
                machine.devices[d].requested_size)
            for d in ids
        }
        console = "\n".join(list(machine.console)[-20:])
        raise AssertionError(f"not settled: {states}\n{console}")
