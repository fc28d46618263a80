"""Typed events the device layer emits for the UI, the monitor and the scenario recorder.

Events are immutable facts; the machine's event bus stamps sequence number and time around
them, so they carry no clock of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event; the machine's bus stamps seq/time around it."""

    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: ``{"kind": kind, **fields}`` with bytes as hex."""
        out: dict[str, object] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).hex()
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class VirtioRequest(Event):
    """A request taken from the guest-request queue, before it is handled."""

    kind: ClassVar[str] = "request"
    device: str
    type: str
    addr: int
    nb_blocks: int


@dataclass(frozen=True, slots=True)
class VirtioResponse(Event):
    """The device's answer to the request emitted just before it."""

    kind: ClassVar[str] = "response"
    device: str
    request: str
    response: str
    state: str | None


@dataclass(frozen=True, slots=True)
class ConfigChange(Event):
    """Config fields that changed (name -> new value) and whether the guest was notified."""

    kind: ClassVar[str] = "config_change"
    device: str
    fields: dict[str, int]
    notified: bool


@dataclass(frozen=True, slots=True)
class BlockStateChange(Event):
    """A contiguous run of device blocks changed state (one event per run, not per block)."""

    kind: ClassVar[str] = "block_state"
    device: str
    first_block: int
    count: int
    plugged: bool


@dataclass(frozen=True, slots=True)
class DeviceBroken(Event):
    """The device stopped working until reset (QEMU ``virtio_error`` text in ``reason``)."""

    kind: ClassVar[str] = "device_broken"
    device: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceReset(Event):
    """A virtio device reset (``"device"``) or a machine reset (``"system"``)."""

    kind: ClassVar[str] = "device_reset"
    device: str
    kind_of_reset: str


@dataclass(frozen=True, slots=True)
class BalloonPages(Event):
    """One inflate or deflate buffer the balloon handled (QEMU's ``handle_output``).

    ``pages``: 4 KiB pages in guest RAM it acted on (inflate: discarded); ``ignored``: PFNs
    that name no RAM (QEMU traces ``virtio_balloon_bad_addr`` and goes on) or lie past
    vmemlab's bound on one buffer.
    """

    kind: ClassVar[str] = "balloon_pages"
    device: str
    queue: str  # "inflate" | "deflate"
    pages: int
    ignored: int


@dataclass(frozen=True, slots=True)
class BalloonActual(Event):
    """The driver wrote a new ``actual``: QEMU's ``BALLOON_CHANGE`` comes from this."""

    kind: ClassVar[str] = "balloon_actual"
    device: str
    actual: int  # pages in the balloon
    guest_size: int  # RAM size minus the balloon: QEMU's "actual" in bytes


@dataclass(frozen=True, slots=True)
class BalloonReport(Event):
    """A free page report (``reporting_vq``): free guest memory the host may take back."""

    kind: ClassVar[str] = "balloon_report"
    device: str
    ranges: int
    bytes: int
    discarded: bool  # False: kept, the guest expects its poison value (QEMU: poison_val)


@dataclass(frozen=True, slots=True)
class BalloonStats(Event):
    """The driver sent a statistics buffer; ``last_update`` is QEMU's (seconds, epoch)."""

    kind: ClassVar[str] = "balloon_stats"
    device: str
    last_update: int


@dataclass(frozen=True, slots=True)
class GuestMemRequest(Event):
    """A request on vmemlab's experimental x-host-request queue (not in any virtio spec):
    emitted when it arrives (``decision`` may be "pending": the presenter is asked) and
    again when a held one is answered or dropped."""

    kind: ClassVar[str] = "guest_mem_request"
    device: str
    seq: int
    type: str  # "need" | "offer"
    node: int
    size: int
    reason: str
    policy: str
    decision: str  # granted / partial / denied / pending / dropped
    granted: int
    requested_size: int  # after the decision
