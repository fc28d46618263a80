"""The comparison lab's virtio-balloon adapter (``control.mechanisms`` lists it).

Sizes follow QEMU: a balloon *target* is the guest's size, not the balloon's.
"""

from __future__ import annotations

from control.guest_ops import BalloonRogue
from control.machine_control import MachineControl
from control.mechanisms import Measured, Mechanism, wait
from emulator.config import BalloonConfig, MachineConfig


class VirtioBalloon(Mechanism):
    name = "virtio-balloon"
    title = "virtio-balloon"
    unit_text = "4 KiB (a page)"
    driver_option = "modprobe.blacklist=virtio_balloon"

    def config(self) -> MachineConfig:
        s = self.size
        return MachineConfig(boot_ram=s.boot + s.extra, maxmem=s.boot + s.extra,
                             cmdline=s.cmdline, balloon=BalloonConfig())

    def assigned(self, control: MachineControl) -> int:
        info = control.balloon.query()
        return info.ram_size - info.balloon_pages * 4096

    def request_back(self, control: MachineControl, amount: int) -> None:
        balloon = control.balloon
        balloon.set_target(max(4096, balloon.query().target - amount))

    def settle(self, control: MachineControl) -> str:
        wait(control.balloon.settled, 20.0)
        return ""

    def rogue_write(self, control: MachineControl) -> Measured:
        if control.balloon.query().balloon_pages == 0:
            return Measured("nothing was given back to write to", {"cheated": None})
        out = control.guest(BalloonRogue(4))
        return Measured("yes: nothing stops the guest, the host backs the pages again",
                        {"cheated": int(out.values["pages"]) > 0})

    def guest_sees(self, control: MachineControl) -> int:
        return control.balloon.query().ram_size

    def host_wants(self, control: MachineControl) -> int:
        return control.balloon.query().target
