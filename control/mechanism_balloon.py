"""The comparison lab's virtio-balloon adapter, for builds that have virtio-balloon.

``control.mechanisms`` imports this only when ``virtio_balloon_available()`` says the build
has the balloon branch's ``BalloonConfig`` and ``BalloonRogue``; everything of that branch is
looked up by name, so this module loads (and type-checks) without it. Sizes follow QEMU: a
balloon *target* is the guest's size, not the balloon's.
"""

from __future__ import annotations

import importlib
from typing import Any

from control.machine_control import MachineControl
from control.mechanisms import Measured, Mechanism, wait
from emulator.config import MachineConfig


def _balloon(control: MachineControl) -> Any:
    return getattr(control, "balloon")  # noqa: B009  (the balloon branch's BalloonControl)


class VirtioBalloon(Mechanism):
    name = "virtio-balloon"
    title = "virtio-balloon"
    unit_text = "4 KiB (a page)"
    driver_option = "modprobe.blacklist=virtio_balloon"

    def config(self) -> MachineConfig:
        config_module = importlib.import_module("emulator.config")
        s = self.size
        cfg = MachineConfig(boot_ram=s.boot + s.extra, maxmem=s.boot + s.extra,
                            cmdline=s.cmdline)
        cfg.balloon = config_module.BalloonConfig()  # type: ignore[attr-defined]
        return cfg

    def assigned(self, control: MachineControl) -> int:
        info = _balloon(control).query()
        return int(info.ram_size - info.balloon_pages * 4096)

    def request_back(self, control: MachineControl, amount: int) -> None:
        balloon = _balloon(control)
        balloon.set_target(max(4096, int(balloon.query().target) - amount))

    def settle(self, control: MachineControl) -> str:
        wait(lambda: bool(_balloon(control).settled()), 20.0)
        return ""

    def rogue_write(self, control: MachineControl) -> Measured:
        ops = importlib.import_module("control.guest_ops")
        if _balloon(control).query().balloon_pages == 0:
            return Measured("nothing was given back to write to", {"cheated": None})
        out = control.guest(ops.BalloonRogue(4))
        return Measured("yes: nothing stops the guest, the host backs the pages again",
                        {"cheated": int(out.values["pages"]) > 0})

    def guest_sees(self, control: MachineControl) -> int:
        return int(_balloon(control).query().ram_size)

    def host_wants(self, control: MachineControl) -> int:
        return int(_balloon(control).query().target)
