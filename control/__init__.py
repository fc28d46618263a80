"""The control layer: typed operations on machines, shared by every front-end.

``monitor`` (HMP/QMP), ``webapp`` (page and JSON API) and ``scenarios`` (the player) sit on
top and translate; ``emulator`` and ``device`` sit below. docs/architecture.md draws it.
"""

from control.balloon import BalloonControl, BalloonInfo
from control.errors import ControlError, ErrorKind
from control.guest_ops import (
    Alloc,
    BalloonRogue,
    Dump,
    Free,
    GuestOp,
    GuestReboot,
    Online,
    Outcome,
    Poweroff,
    Pressure,
    Read,
    RogueWrite,
    Stats,
    Touch,
    Verify,
)
from control.machine_control import MachineControl, control_for
from control.settle import SettleWatch, balloon_settled, device_settled
from emulator.states import DriverState, RunState

__all__ = [
    "Alloc",
    "BalloonControl",
    "BalloonInfo",
    "BalloonRogue",
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
    "Pressure",
    "Read",
    "RogueWrite",
    "RunState",
    "SettleWatch",
    "Stats",
    "Touch",
    "Verify",
    "balloon_settled",
    "control_for",
    "device_settled",
]
