"""Guest -> host memory requests: vmemlab's experiment of the 2017 RFC addendum (not in any
virtio specification; docs/extensions.md).

A device built with ``x-guest-requests=on`` has a second virtqueue on which the guest asks
for memory ("need N bytes on node K, because ...") or offers some back. The host answers
with a policy chosen here (deny, cap, rate, ask); with ``ask`` the request waits for the
presenter's :meth:`GuestRequestControl.answer`. A grant only raises ``requested_size``:
the memory arrives through the ordinary PLUG path. The guest's ``grow`` workload is the
demonstration: it allocates until an allocation fails, then asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control.errors import ENGINE_ERRORS, ControlError, ErrorKind
from control.guest_ops import check_guest_can_act
from control.sizes import format_mib
from device.errors import ConfigError
from device.virtio_mem_requests import GuestRequests
from emulator import abi
from emulator.machine import Machine
from emulator.workload import errno_name

GROW_TIMEOUT = 600.0  # a grow under the "ask" policy waits for the presenter


@dataclass(frozen=True)
class GrowResult:
    """What the guest's "grow until it fails" workload did."""

    allocated: int
    requests: int
    granted: int
    denied: int

    @property
    def message(self) -> str:
        return (f"grew by {format_mib(self.allocated)}; {self.requests} request"
                f"{'' if self.requests == 1 else 's'} to the host: {self.granted} granted, "
                f"{self.denied} denied")

    def to_dict(self) -> dict[str, Any]:
        return {"allocated": self.allocated, "requests": self.requests,
                "granted": self.granted, "denied": self.denied}


class GuestRequestControl:
    """The request queues of one machine's devices; see the module docstring."""

    def __init__(self, machine: Machine, admit: Callable[[int], None]) -> None:
        self.machine = machine
        self._admit = admit

    def queue(self, device: str) -> GuestRequests:
        """The host side of ``device``'s request queue, or a refusal saying why not."""
        dev = self.machine.devices.get(device)
        if dev is None:
            raise ControlError(f"Device '{device}' not found", ErrorKind.NOT_FOUND)
        if dev.requests is None:
            raise ControlError(f"Device '{device}' has no guest request queue (an experiment: "
                               "-device virtio-mem-pci,...,x-guest-requests=on)",
                               ErrorKind.NOT_ACTIVE)
        return dev.requests

    def devices(self) -> list[str]:
        """Ids of the devices that have the queue."""
        return [d.id for d in self.machine.devices.values() if d.requests is not None]

    def set_policy(self, device: str, policy: str, *, cap: int | None = None,
                   rate: int | None = None, period: float | None = None) -> dict[str, Any]:
        """Pick how the host answers (deny / cap / rate / ask); returns the policy."""
        queue = self.queue(device)
        if cap is not None or (policy == "cap" and queue.config.cap == 0):
            self._admit(0)
        with self.machine.device_lock:
            try:
                queue.set_policy(policy, cap=cap, rate=rate, period=period)
            except ConfigError as err:
                raise ControlError(str(err), ErrorKind.INVALID) from None
            return queue.config.to_dict()

    def info(self, device: str) -> dict[str, Any]:
        """``info virtio-mem-requests ID``: the policy, the pending request, the log."""
        queue = self.queue(device)
        with self.machine.device_lock:
            pending = queue.pending
            return {"id": device, **queue.config.to_dict(),
                    "pending": pending.to_dict() if pending is not None else None,
                    "requests": [r.to_dict() for r in queue.log]}

    def answer(self, device: str, grant: bool, size: int | None = None) -> dict[str, Any]:
        """The presenter's answer to the request that waits (policy ``ask``)."""
        queue = self.queue(device)
        if grant:
            self._admit(0)
        with self.machine.device_lock:
            try:
                record = queue.answer(grant, size)
            except ConfigError as err:
                raise ControlError(str(err), ErrorKind.REFUSED) from None
            return record.to_dict()

    def grow(self, chunk: int, limit: int = 0, *, ask: bool = True,
             timeout: float = GROW_TIMEOUT) -> GrowResult:
        """The guest allocates ``chunk`` bytes (movable) until an allocation fails; with
        ``ask`` it then asks the host for memory and goes on while the host grants."""
        if chunk <= 0 or limit < 0:
            raise ControlError("guest grow: the chunk must be positive and the limit "
                               "not negative")
        machine = self.machine
        check_guest_can_act(machine)
        self._admit(chunk)
        try:
            res = machine.guest_command("grow", chunk, limit,
                                        abi.GROW_ASK_HOST if ask else 0, timeout=timeout)
        except ENGINE_ERRORS as err:
            translated = ControlError.of(err)
            raise ControlError(f"guest grow: {translated.message}", translated.kind) from None
        if res.status:
            raise ControlError(f"guest grow failed: {errno_name(res.status)}",
                               ErrorKind.FAILED)
        packed = res.values[1]
        return GrowResult(res.values[0], packed & 0xFFFF, (packed >> 16) & 0xFFFF,
                          (packed >> 32) & 0xFFFF)
