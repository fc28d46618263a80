"""The machine's run state and the guest driver's state, as enums every layer shares.

Both are ``StrEnum``s: a value compares equal to its QEMU / guest name (``RunState.RUNNING ==
"running"``), so events, JSON and monitor texts carry the same words QEMU and the guest use.
"""

from __future__ import annotations

from enum import StrEnum

from emulator import abi


class RunState(StrEnum):
    """QEMU's ``RunState`` names (``query-status``), the ones this machine can be in."""

    PRELAUNCH = "prelaunch"
    RUNNING = "running"
    PAUSED = "paused"
    INMIGRATE = "inmigrate"
    POSTMIGRATE = "postmigrate"
    SHUTDOWN = "shutdown"
    SUSPENDED = "suspended"  # S3: the guest called PSCI SYSTEM_SUSPEND; system_wakeup ends it
    GUEST_PANICKED = "guest-panicked"
    INTERNAL_ERROR = "internal-error"

    @property
    def needs_reset(self) -> bool:
        """QEMU's ``runstate_needs_reset``: only ``system_reset`` gets the guest going again."""
        return self in _NEEDS_RESET

    @property
    def resumable(self) -> bool:
        """``cont`` runs the guest from here."""
        return self in _RESUMABLE


_NEEDS_RESET = frozenset({RunState.SHUTDOWN, RunState.GUEST_PANICKED, RunState.INTERNAL_ERROR})
_RESUMABLE = frozenset({RunState.PAUSED, RunState.PRELAUNCH, RunState.POSTMIGRATE,
                        RunState.SHUTDOWN})


class DriverState(StrEnum):
    """What the guest's driver last reported for a device (``ABI_DRV_*``): virtio-mem's
    states, and the balloon's (idle, inflating, deflating, retrying when out of puff).

    ``ABSENT`` is the host's word for "no driver has said anything since the last boot".
    """

    ABSENT = "absent"
    PROBING = "probing"
    IDLE = "idle"
    PLUGGING = "plugging"
    UNPLUGGING = "unplugging"
    STOPPED_SHORT = "stopped-short"
    BROKEN = "broken"
    FAILED = "failed"
    DISABLED = "disabled"
    RETRYING = "retrying"
    NO_MEMORY = "no-memory"
    NO_SPACE = "no-space"  # Linux's -ENOSPC: too much added memory is offline (threshold)
    INFLATING = "inflating"  # virtio-balloon: giving pages to the host
    DEFLATING = "deflating"  # virtio-balloon: taking pages back

    @classmethod
    def from_code(cls, code: int) -> DriverState | None:
        """The state the guest reported with ``ABI_DRV_*`` ``code`` (None: unknown code)."""
        name = abi.DRIVER_STATES.get(code)
        return cls(name) if name is not None else None

    @property
    def final(self) -> bool:
        """The driver stopped working towards ``requested_size`` (until the next change)."""
        return self in _FINAL

    @property
    def working(self) -> bool:
        """The driver is in the middle of plugging or unplugging."""
        return self in (DriverState.PROBING, DriverState.PLUGGING, DriverState.UNPLUGGING,
                        DriverState.INFLATING, DriverState.DEFLATING)


_FINAL = frozenset({DriverState.STOPPED_SHORT, DriverState.BROKEN, DriverState.FAILED,
                    DriverState.DISABLED, DriverState.NO_MEMORY, DriverState.NO_SPACE})
