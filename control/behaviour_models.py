"""The Xen and Hyper-V behaviour models as typed operations (``MachineControl.models``).

Models of what the 2017 RFC's Q&A says about those balloons, built on this sandbox's
machinery (emulator/pv_balloon.py says what is modelled and what is not): one operation,
``set_target``, is the host's wish for the guest's memory -- Xen's ``xl mem-set``, Hyper-V's
Dynamic Memory. Under the Hyper-V model growing the guest hot-adds memory in 128 MiB pc-dimms
(Hyper-V adds memory in 128 MiB units; here through ACPI, not Hyper-V's protocol) and the
balloon gives back the rest; under the Xen model the guest's balloon gives back or takes
back pages of the RAM it saw at boot, up to ``maxmem``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from control.dimm_ops import DimmControl
from control.errors import ControlError, ErrorKind
from emulator.pv_balloon import PvBalloonHost

if TYPE_CHECKING:
    from emulator.machine import Machine

HOTADD_UNIT = 128 << 20  # Hyper-V's hot-add granularity (hv_balloon: HA_CHUNK)
PAGE = 4096
NO_MODEL = ("this machine has no behaviour model (start it with "
            "-machine x-behaviour-model=xen or hyperv)")


class BehaviourModelControl:
    """The behaviour model of one machine; see the module docstring."""

    def __init__(self, machine: Machine, admit: Callable[[int], None], dimms: DimmControl
                 ) -> None:
        self.machine = machine
        self._admit = admit
        self._dimms = dimms

    @property
    def model(self) -> str:
        return self.machine.config.behaviour_model

    def _host(self) -> PvBalloonHost:
        host = self.machine.board.pv_balloon
        if host is None:
            raise ControlError(NO_MODEL, ErrorKind.REFUSED)
        return host

    def current_ram(self) -> int:
        """RAM the guest sees: boot RAM (Xen: maxmem) and hot-added DIMMs."""
        machine = self.machine
        return machine.boot_ram.size + sum(d.size for d in machine.hotplug.plugged())

    def set_target(self, size: int) -> None:
        """The host's wish: the guest should have ``size`` bytes of RAM."""
        host = self._host()
        if size <= 0 or size % PAGE:
            raise ControlError("target must be a positive multiple of 4 KiB")
        if size > host.target:
            self._admit(0)
        if self.model == "xen" and size > self.machine.boot_ram.size:
            raise ControlError(f"target {size >> 20} MiB is above maxmem "
                               f"({self.machine.boot_ram.size >> 20} MiB): the Xen model's "
                               "guest only ever sees maxmem")
        if self.model == "hyperv":
            self._hot_add(size)
        host.set_target(size)

    def _hot_add(self, size: int) -> None:
        have = self.current_ram()
        while have < size:
            n = len(self.machine.hotplug.plugged())
            name = f"hv-add{n}"
            while self.machine.hotplug.backends.get(f"{name}-mem") is not None or \
                    self.machine.hotplug.by_id(name) is not None:
                n += 1
                name = f"hv-add{n}"
            self._dimms.object_add("memory-backend-ram", {"id": f"{name}-mem",
                                                          "size": HOTADD_UNIT})
            try:
                self._dimms.device_add("pc-dimm", {"id": name, "memdev": f"{name}-mem"})
            except ControlError:
                self._dimms.object_del(f"{name}-mem")
                raise
            have += HOTADD_UNIT

    def stats(self, residency: bool = True) -> dict[str, Any]:
        """What the host sees: target, bytes given back, of those still used (``cheated``),
        bytes it backs (``populated``); plus the RAM the guest was given in all."""
        out = self._host().stats(residency)
        out["ram"] = self.current_ram()
        return out

    def given_map(self, chunk: int = 2 << 20) -> list[tuple[str, int, bytes]]:
        """Per RAM block and ``chunk``: 0 in use, 1 partly given back, 2 given back."""
        return self._host().given_map(chunk)

    def given_page(self) -> int | None:
        """The address of a page the guest gave back (for a rogue write), or None."""
        return self._host().first_given()
