"""Shared fixtures: real machines running the real guest image."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

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
              **kwargs: object) -> Machine:
        machine = Machine(config or small_config(), **kwargs)  # type: ignore[arg-type]
        machines.append(machine)
        if start:
            machine.start()
        return machine

    yield build
    for machine in machines:
        machine.close()


def settled(machine: Machine, dev_id: str = "vm0") -> bool:
    """The guest driver has finished reacting: idle at the requested size, or gave up."""
    state = machine.guest_states.get(dev_id)
    dev = machine.devices[dev_id]
    if state == "idle":
        return dev.plugged_size == dev.requested_size
    return state in ("stopped-short", "broken", "failed", "disabled", "no-memory", "no-space")


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
