"""Predict-then-check: a lesson goal's question and the quantity the machine measures for it.

A goal may carry ``predict: {question, measure, device?, tolerance?}`` (docs/scenarios.md).
The learner answers before the goal is reached; once it is, the lesson page compares the
answer with :func:`measure` of the machine at that moment -- the value comes from the
machine, never from the lesson file (a lesson states no answer, only a tolerance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emulator.snapshot import DeviceSnapshot, MachineSnapshot

PAGE = 4096


@dataclass(frozen=True)
class Measure:
    """One quantity a prediction can ask about."""

    unit: str  # "bytes" or "count"
    per_device: bool  # needs a virtio-mem device
    residency: bool  # needs the host's residency in the snapshot
    read: Callable[[MachineSnapshot, DeviceSnapshot | None], int | None]


def _dev(f: Callable[[DeviceSnapshot], int | None]
         ) -> Callable[[MachineSnapshot, DeviceSnapshot | None], int | None]:
    return lambda _snap, dev: f(dev) if dev is not None else None


def _model_ballooned(snap: MachineSnapshot, _dev: DeviceSnapshot | None) -> int | None:
    view = snap.guest.pv_balloon if snap.guest is not None else None
    return view.ballooned_pages * PAGE if view is not None else None


MEASURES: dict[str, Measure] = {
    "plugged": Measure("bytes", True, False, _dev(lambda d: d.plugged_size)),
    "requested": Measure("bytes", True, False, _dev(lambda d: d.requested_size)),
    "usable": Measure("bytes", True, False, _dev(lambda d: d.usable_region_size)),
    "plugged-blocks": Measure("count", True, False, _dev(lambda d: d.plugged_blocks)),
    "unplugged-resident": Measure("bytes", True, True, _dev(lambda d: d.unplugged_resident)),
    "dimms": Measure("count", False, False, lambda snap, _d: len(snap.dimms)),
    "balloon-actual": Measure("bytes", False, False, lambda snap, _d: (
        snap.balloon.guest_size if snap.balloon is not None else None)),
    "balloon-pages": Measure("count", False, False, lambda snap, _d: (
        snap.balloon.actual if snap.balloon is not None else None)),
    "model-ballooned": Measure("bytes", False, False, _model_ballooned),
}


@dataclass(frozen=True)
class Prediction:
    """``question`` about ``measure`` (of ``device``), right within ``tolerance``."""

    question: str
    measure: str
    device: str | None
    tolerance: int

    @property
    def unit(self) -> str:
        return MEASURES[self.measure].unit

    @property
    def residency(self) -> bool:
        return MEASURES[self.measure].residency


def measure(snap: MachineSnapshot, prediction: Prediction) -> int | None:
    """What the machine shows for ``prediction`` now (None: not measurable right now)."""
    dev = None
    if prediction.device is not None:
        dev = next((d for d in snap.devices if d.id == prediction.device), None)
    return MEASURES[prediction.measure].read(snap, dev)
