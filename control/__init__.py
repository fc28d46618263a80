"""The control layer: typed operations on machines, shared by every front-end.

``monitor`` (HMP/QMP), ``webapp`` (page and JSON API) and ``scenarios`` (the player) sit on
top and translate; ``emulator`` and ``device`` sit below. docs/architecture.md draws it.
"""

from control.errors import ControlError, ErrorKind
from control.guest_ops import (
    Alloc,
    Dump,
    Free,
    GuestOp,
    GuestReboot,
    Online,
    Outcome,
    Poweroff,
    Read,
    RogueWrite,
    Stats,
    Touch,
    Verify,
)
from control.machine_control import MachineControl, control_for
from control.settle import SettleWatch, device_settled
from emulator.states import DriverState, RunState

__all__ = [
    "Alloc",
    "ControlError",
    "DriverState",
    "Dump",
    "ErrorKind",
    "Free",
    "GuestOp",
    "GuestReboot",
    "MachineControl",
    "Online",
    "Outcome",
    "Poweroff",
    "Read",
    "RogueWrite",
    "RunState",
    "SettleWatch",
    "Stats",
    "Touch",
    "Verify",
    "control_for",
    "device_settled",
]
