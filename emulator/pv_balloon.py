"""The host side of the behaviour models: the Xen balloon and the Hyper-V balloon as the 2017
RFC's Q&A describes them. Models, not emulations of Xen or Hyper-V (docs/compare.md says
which parts are modelled and which are not).

Both keep, per 4 KiB page of guest RAM, whether the guest gave it back (``GIVE``) and answer
the guest balloon driver's ``VMEM_CALL_PVBALLOON`` (guest/pv_balloon.c); the host's *target*
(``xl mem-set`` / Dynamic Memory) is what the guest should have.

**Xen** (RFC: "on a reboot, the guest will 'see' more memory than it actually has ... If the
XEN guest driver doesn't come up, the guest will get killed once it touches too much
memory"): the guest's boot info shows ``maxmem`` of RAM, but the host populated only the
target (the first ``-m`` bytes at boot; its physmap is a stage-2 window of 4 KiB pages).
Given-back pages are unpopulated; taking pages back beyond the target is refused; any access
to a page the host never gave or took back kills the domain (SHUTDOWN, reason
``host-error``). A reboot rebuilds the domain: the target is populated again, the guest
again sees ``maxmem``.

**Hyper-V** (RFC: "memory will remain plugged on a reboot. Therefore, the guest will see more
memory than the hypervisor actually wants to assign to it ... the hypervisor has to deal with
malicious guests"): growth is hot-add (pc-dimms here, which stay across reboots), shrinking
is only ballooning; nothing stops the guest from using a page it gave back (the host backs it
again: counted as ``cheated``); after a reboot the balloon is empty and the guest has all of
boot RAM and every hot-added DIMM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from unicorn import arm64_const as arm
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from emulator import abi
from emulator.backing import HOST_PAGE_SIZE, HostMemory
from emulator.bitmap_window import BitmapWindow

PAGE = abi.PAGE_SIZE
PHYSMAP = "xen-physmap"
EINVAL = -22 & 0xFFFF_FFFF_FFFF_FFFF
ENOMEM = -12 & 0xFFFF_FFFF_FFFF_FFFF
_UNPOPULATED = bytes([1] + [0] * 255)  # physmap byte -> "given back" byte
KILLED = "host-error: the domain touched memory it was never given (Xen behaviour model)"


class PvBalloonHost:
    """One machine's behaviour model (``model`` "xen" or "hyperv"); see the module docstring.

    ``blocks()`` lists the RAM the guest may give back: (name, host memory) pairs, boot RAM
    first, then DIMMs; ``raise_event`` wakes the guest with ``EV_PVBALLOON``.
    """

    def __init__(self, model: str, target: int, boot_ram: HostMemory,
                 blocks: Callable[[], list[HostMemory]], raise_event: Callable[[int], None],
                 flush_tlb: Callable[[], None], lock: threading.RLock) -> None:
        self.model = model
        self.target = target
        self._boot_target = target
        self._boot = boot_ram
        self._blocks = blocks
        self._raise_event = raise_event
        self._flush_tlb = flush_tlb
        self._lock = lock
        self.given: dict[str, bytearray] = {}  # ramblock name -> 1 byte per page
        self.physmap: BitmapWindow | None = None
        if model == "xen":
            self.physmap = BitmapWindow(PHYSMAP, boot_ram.gpa, boot_ram.size, PAGE)
            self._populate_boot()

    # ---------------------------------------------------------------- host side

    def set_target(self, target: int) -> None:
        """``xl mem-set`` / Dynamic Memory: the guest's driver converges to ``target``."""
        with self._lock:
            self.target = target
        self._raise_event(abi.EV_PVBALLOON)

    def system_reset(self) -> None:
        """Xen rebuilds the domain with its target populated; Hyper-V forgets the balloon."""
        with self._lock:
            self.given.clear()
            if self.physmap is not None:
                self._boot.discard(0, self._boot.size)
                self._boot_target = self.target
                self._populate_boot()
                self._flush_tlb()

    def _populate_boot(self) -> None:
        assert self.physmap is not None
        size = min(self._boot_target, self._boot.size) // PAGE * PAGE
        self.physmap.set_range(self._boot.gpa, self._boot.size, False)
        self.physmap.set_range(self._boot.gpa, size, True)

    def fatal(self, window: str | None) -> str | None:
        """Why an access refused in ``window`` ends the machine (None: it does not)."""
        return KILLED if window == PHYSMAP else None

    # ---------------------------------------------------------------- the guest's calls

    def call(self, uc: UcAArch64, x: list[int]) -> bool:
        """``VMEM_CALL_PVBALLOON`` (op x1, address x2, pages x3) -> x0; never stops the vCPU."""
        op, addr, pages = x[1], x[2], x[3]
        if op == abi.PVB_OP_TARGET:
            result = self.target
        elif op in (abi.PVB_OP_GIVE, abi.PVB_OP_TAKE):
            result = self._pages(op == abi.PVB_OP_GIVE, addr, pages)
        else:
            result = EINVAL
        uc.reg_write(arm.UC_ARM64_REG_X0, result & 0xFFFF_FFFF_FFFF_FFFF)
        return False

    def _locate(self, addr: int, pages: int) -> tuple[HostMemory, bytearray, int] | None:
        size = pages * PAGE
        if pages <= 0 or addr % PAGE:
            return None
        for mem in [self._boot, *self._blocks()]:
            if mem.contains(addr, size):
                bitmap = self.given.setdefault(mem.name, bytearray(mem.size // PAGE))
                return mem, bitmap, (addr - mem.gpa) // PAGE
        return None

    def _pages(self, give: bool, addr: int, pages: int) -> int:
        with self._lock:
            found = self._locate(addr, pages)
            if found is None:
                return EINVAL
            mem, bitmap, first = found
            if give:
                bitmap[first:first + pages] = b"\x01" * pages
                mem.discard(first * PAGE, pages * PAGE)
                if self.physmap is not None and mem is self._boot:
                    self.physmap.set_range(addr, pages * PAGE, False)
                    self._flush_tlb()
                return 0
            if self.physmap is not None:  # Xen: populate_physmap within the reservation
                populated = self.physmap.bitmap.count(1)
                if (populated + pages) * PAGE > self.target:
                    return ENOMEM
                self.physmap.set_range(addr, pages * PAGE, True)
                self._flush_tlb()
            bitmap[first:first + pages] = bytes(pages)
            return 0

    # ---------------------------------------------------------------- measurements

    def first_given(self) -> int | None:
        """The address of some page the guest gave back (for a rogue write), or None."""
        with self._lock:
            blocks = {m.name: m for m in [self._boot, *self._blocks()]}
            for name, bitmap in self.given.items():
                page = bitmap.find(1)
                if page >= 0 and name in blocks:
                    return blocks[name].gpa + page * PAGE
            if self.physmap is not None:
                page = self.physmap.bitmap.find(0)
                if page >= 0:
                    return self.physmap.addr + page * PAGE
            return None

    def stats(self, residency: bool = True) -> dict[str, Any]:
        """Bytes given back, and of those how many the guest is using anyway (``cheated``:
        host memory resident in pages it gave back; measured with ``residency``), what the
        host populated (Xen: its physmap; Hyper-V: all RAM and DIMMs)."""
        with self._lock:
            blocks = {m.name: m for m in [self._boot, *self._blocks()]}
            given = cheated = 0
            for name, bitmap in self.given.items():
                mem = blocks.get(name)
                if mem is None:
                    continue
                given += bitmap.count(1) * PAGE
                if residency and bitmap.count(1):
                    cheated += _resident_given(mem, bitmap) * PAGE
            populated = (self.physmap.bitmap.count(1) * PAGE if self.physmap is not None
                         else sum(m.size for m in blocks.values()) - given + cheated)
            return {"model": self.model, "target": self.target, "given": given,
                    "cheated": cheated, "populated": populated}

    def given_map(self, chunk: int) -> list[tuple[str, int, bytes]]:
        """Per RAM block (name, address) and per ``chunk`` bytes of it: 0 nothing given back,
        1 partly, 2 all of it (Xen: pages the host does not back)."""
        per = max(1, chunk // PAGE)
        out = []
        with self._lock:
            for mem in [self._boot, *self._blocks()]:
                if self.physmap is not None and mem is self._boot:
                    given = bytes(self.physmap.bitmap).translate(_UNPOPULATED)
                else:
                    given = bytes(self.given.get(mem.name, bytearray(mem.size // PAGE)))
                codes = bytearray()
                for start in range(0, len(given), per):
                    n = given.count(1, start, start + per)
                    codes.append(0 if n == 0 else 2 if n == min(per, len(given) - start) else 1)
                out.append((mem.name, mem.gpa, bytes(codes)))
        return out

    def state(self) -> dict[str, Any]:
        return {"target": self.target}

    def restore(self, state: dict[str, Any]) -> None:
        self.target = int(state["target"])


def _resident_given(mem: HostMemory, given: bytearray) -> int:
    """Pages marked in ``given`` (1 byte per guest page) that hold host memory again."""
    resident = mem.resident_pages()
    if HOST_PAGE_SIZE == PAGE:
        both = int.from_bytes(given, "little") & int.from_bytes(resident, "little")
        return both.bit_count()  # each byte is 0 or 1
    return sum(1 for page, g in enumerate(given)
               if g and resident[page * PAGE // HOST_PAGE_SIZE])
