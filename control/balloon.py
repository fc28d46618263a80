"""Balloon operations every front-end uses: QEMU's ``balloon``, ``query-balloon``, the
``guest-stats`` and ``guest-stats-polling-interval`` properties, and when the balloon counts
as settled.

Sizes are QEMU's: a *target* is the size the guest should have (``balloon 512`` asks for a
512 MiB guest, not a 512 MiB balloon), and ``actual`` is the guest's size as the driver last
reported it -- both in bytes. A machine without a balloon answers every operation with QEMU's
"No balloon device has been activated" (``ErrorKind.NOT_ACTIVE``: QMP's DeviceNotActive).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control.errors import ControlError, ErrorKind
from control.settle import balloon_settled
from device.errors import ConfigError
from device.virtio_balloon import VirtioBalloonDevice
from emulator.machine import Machine
from emulator.snapshot import BalloonSnapshot

NO_BALLOON = "No balloon device has been activated"
PAGE = 4096


@dataclass(frozen=True)
class BalloonInfo:
    """What ``query-balloon`` knows, and a little more for the page and scenarios."""

    id: str
    actual: int  # bytes: the guest's size as the driver reported it (QEMU's "actual")
    target: int  # bytes: the size the host asked for
    ram_size: int  # bytes: RAM the balloon works on (QEMU's get_current_ram_size())
    balloon_pages: int  # 4 KiB pages in the balloon (config "actual")
    driver_state: str
    deflate_on_oom: bool
    free_page_reporting: bool

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "actual": self.actual, "target": self.target,
                "ram-size": self.ram_size, "balloon-pages": self.balloon_pages,
                "driver-state": self.driver_state, "deflate-on-oom": self.deflate_on_oom,
                "free-page-reporting": self.free_page_reporting}


class BalloonControl:
    """The balloon of one machine; see the module docstring."""

    def __init__(self, machine: Machine, admit: Callable[[int], None],
                 answered: Callable[[str, int | None], bool]) -> None:
        self.machine = machine
        self._admit = admit
        self._answered = answered

    @property
    def present(self) -> bool:
        return self.machine.balloon is not None

    def device(self) -> VirtioBalloonDevice:
        """The balloon, or QEMU's DeviceNotActive refusal."""
        balloon = self.machine.balloon
        if balloon is None:
            raise ControlError(NO_BALLOON, ErrorKind.NOT_ACTIVE)
        return balloon

    # ---------------------------------------------------------------- target

    def set_target(self, target: int) -> None:
        """QEMU's ``qmp_balloon``: no device first, then ``target <= 0``, then the device
        (which clamps a target above RAM: the balloon cannot add memory)."""
        balloon = self.device()
        if target <= 0:
            raise ControlError("Parameter 'target' expects a size", ErrorKind.INVALID)
        if target > balloon.target_size:
            self._admit(0)  # deflating lets guest memory grow again
        try:
            self.machine.set_balloon_target(target)
        except ConfigError as err:
            raise ControlError(str(err), ErrorKind.INVALID) from None

    # ---------------------------------------------------------------- queries

    def snapshot(self, *, residency: bool = False) -> BalloonSnapshot:
        self.device()
        snap = self.machine.snapshot(residency=residency).balloon
        assert snap is not None
        return snap

    def query(self) -> BalloonInfo:
        """``query-balloon`` (``actual`` in bytes) and the rest of the host's side."""
        b = self.snapshot()
        return BalloonInfo(b.id, b.guest_size, b.target_size, b.ram_size, b.actual,
                           b.driver_state, b.deflate_on_oom, b.free_page_reporting)

    def guest_stats(self) -> dict[str, Any]:
        """QEMU's ``guest-stats`` property: ``{"stats": {...}, "last-update": N}``."""
        return self.device().guest_stats()

    def poll_interval(self) -> int:
        return self.device().stats_poll_interval

    def set_poll_interval(self, seconds: int) -> None:
        """``qom-set ID guest-stats-polling-interval N`` (QEMU's checks and texts)."""
        self.device()
        try:
            self.machine.set_balloon_poll_interval(seconds)
        except ConfigError as err:
            raise ControlError(str(err), ErrorKind.INVALID) from None

    # ---------------------------------------------------------------- settled

    def settled(self) -> bool:
        """The driver has caught up with the target or stopped trying (control/settle.py);
        True for a machine without a balloon."""
        balloon = self.machine.balloon
        if balloon is None:
            return True
        snap = self.machine.snapshot()
        assert snap.balloon is not None
        return balloon_settled(snap.balloon, answered=self._answered(balloon.id, snap.seq))
