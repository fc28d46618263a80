"""The emulated machine: Unicorn vCPU, stage-2 translation, host backing, events."""

from emulator.config import BalloonConfig, MachineConfig, MemoryDeviceConfig, NumaNodeConfig
from emulator.machine import GuestResult, Machine, MachineError

__all__ = [
    "BalloonConfig",
    "GuestResult",
    "Machine",
    "MachineConfig",
    "MachineError",
    "MemoryDeviceConfig",
    "NumaNodeConfig",
]
