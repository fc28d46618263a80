"""Errors of the control layer: a message (QEMU's words where QEMU has them) and a kind.

Front-ends translate the *kind*, never the text: QMP maps ``NOT_FOUND`` to the class
``DeviceNotFound`` and the rest to ``GenericError``; the web maps kinds to HTTP statuses;
the scenario player reports the message as the step's failure.
"""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from enum import StrEnum

from device.errors import (
    ConfigError,
    DeviceNotFound,
    GuestMemoryError,
    MigrationError,
    VmemError,
)
from emulator.paravirt import MachineError
from emulator.workload import GuestError


class ErrorKind(StrEnum):
    NOT_FOUND = "not-found"  # no such device, allocation, machine
    NOT_ACTIVE = "not-active"  # the machine has no such device at all (QEMU: no balloon)
    INVALID = "invalid"  # the request breaks a rule (a size, a property, an argument)
    BUSY = "busy"  # not now: another operation runs, the guest is not ready yet
    REFUSED = "refused"  # not in this state, or not for this caller (policy)
    EXHAUSTED = "exhausted"  # a limit of this server is reached (memory budget): try later
    FAILED = "failed"  # tried, and the guest or the engine failed (ENOMEM, timeout)


class ControlError(Exception):
    """An operation did not happen; ``kind`` says why in a way front-ends can translate."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.INVALID) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind

    @classmethod
    def of(cls, exc: BaseException) -> ControlError:
        """The control error for an exception the engine raises on purpose.

        Anything else is a bug and is not translated: callers let it propagate.
        """
        if isinstance(exc, ControlError):
            return exc
        if isinstance(exc, DeviceNotFound):
            return cls(str(exc), ErrorKind.NOT_FOUND)
        if isinstance(exc, GuestError):
            return cls(str(exc), ErrorKind.FAILED)
        if isinstance(exc, (TimeoutError, FutureTimeout)):
            return cls(str(exc) or "the guest did not answer in time", ErrorKind.FAILED)
        if isinstance(exc, MachineError):
            return cls(str(exc), ErrorKind.REFUSED)
        if isinstance(exc, (ConfigError, MigrationError, GuestMemoryError)):
            return cls(str(exc), ErrorKind.INVALID)
        if isinstance(exc, VmemError):
            return cls(str(exc), ErrorKind.FAILED)
        raise TypeError(f"not an engine error: {type(exc).__name__}") from exc


#: the engine's own error types (what ``ControlError.of`` translates)
ENGINE_ERRORS: tuple[type[BaseException], ...] = (VmemError, GuestError, TimeoutError,
                                                  FutureTimeout)
