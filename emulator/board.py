"""The board: one Unicorn engine, the guest-physical memory map and the devices on it.

What a machine *is*, without what it *does*: boot RAM, the shared zero page, one host-backed
region, virtio-mem device and virtio-mmio transport per configured device, a virtio-balloon in
the next virtio-mmio slot if configured, the console UART, stage-2 translation over all of it,
and the firmware's job of loading the guest image with its boot info. It owns no thread and no
run state (``emulator.vcpu`` and ``emulator.machine`` do). Every method that touches the engine
must run on the vCPU thread or before it starts.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import Any, cast

from unicorn import (
    UC_ARCH_ARM64,
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_MODE_ARM,
    UC_PROT_ALL,
    UC_PROT_READ,
    UC_PROT_WRITE,
    UC_TLB_VIRTUAL,
    Uc,
    UcError,
)
from unicorn import arm64_const as arm
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from device import virtio_balloon_protocol as balloon_protocol
from device.events import Event
from device.virtio_balloon import BalloonOptions, VirtioBalloonDevice
from device.virtio_mem import VirtioMemDevice, VirtioMemOptions
from device.virtio_mmio import QUEUE_NOTIFY, VirtioMmioTransport
from emulator import abi
from emulator.backing import HostMemory
from emulator.balloon_ram import BalloonRam
from emulator.config import MachineConfig, MachineLayout
from emulator.dimm_hotplug import DimmHotplug
from emulator.guest_memory import CpuView, DmaMemory
from emulator.host_timer import HostTimer
from emulator.huge_pages import HugePageMemory
from emulator.pv_balloon import PvBalloonHost
from emulator.stage2 import TLB_PAGE_SIZE, Stage2

# Host-physical home of the shared zero page: outside every window stage 2 maps, so the guest
# can never reach it except through a read-only alias.
ZERO_PAGE_PA = 0xFF_FFFF_F000

#: CPU registers a saved machine carries (name → Unicorn register); SPSR_EL1 goes separately.
CPU_REGISTERS: dict[str, int] = {
    **{f"x{i}": arm.UC_ARM64_REG_X0 + i for i in range(29)},
    "x29": arm.UC_ARM64_REG_X29, "x30": arm.UC_ARM64_REG_X30, "sp": arm.UC_ARM64_REG_SP,
    "pc": arm.UC_ARM64_REG_PC, "pstate": arm.UC_ARM64_REG_PSTATE,
    "sp_el0": arm.UC_ARM64_REG_SP_EL0, "sp_el1": arm.UC_ARM64_REG_SP_EL1,
    "vbar_el1": arm.UC_ARM64_REG_VBAR_EL1, "elr_el1": arm.UC_ARM64_REG_ELR_EL1,
    "esr_el1": arm.UC_ARM64_REG_ESR_EL1, "far_el1": arm.UC_ARM64_REG_FAR_EL1,
    "tpidr_el1": arm.UC_ARM64_REG_TPIDR_EL1, "cpacr_el1": arm.UC_ARM64_REG_CPACR_EL1,
}
SPSR_EL1 = (3, 0, 4, 0, 0)  # op0, op1, CRn, CRm, op2
# restored last, in this order: PSTATE selects which SP register "sp" is, PC goes last
_RESTORE_LAST = ("pstate", "sp", "pc")


def new_engine() -> UcAArch64:
    """An AArch64 engine with 4 KiB TLB pages and stage-2 (``UC_TLB_VIRTUAL``) translation.

    The page size must be the first thing set: anything that initialises the engine
    (``ctl_set_tlb_mode``, even ``ctl_get_page_size``, any map or hook) fixes it at Unicorn's
    default of 1 KiB for AArch64, and ``ctl_set_page_size`` then fails with UC_ERR_ARG.
    """
    uc = cast(UcAArch64, Uc(UC_ARCH_ARM64, UC_MODE_ARM))
    uc.ctl_set_page_size(TLB_PAGE_SIZE)
    uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
    if uc.ctl_get_page_size() != TLB_PAGE_SIZE:
        raise RuntimeError(f"Unicorn kept {uc.ctl_get_page_size()}-byte TLB pages")
    return uc


PCI_SLOT_BASE = 3  # the monitor shows virtio-mem-pci at 00:03.0 on, as the transcripts do


def device_ramblock_id(index: int, memdev: str) -> str:
    """QEMU's RAMBlock id of a virtio-mem device's memdev: ``0000:00:03.0/mem0``."""
    return f"0000:00:{PCI_SLOT_BASE + index:02x}.0/{memdev}"


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


class _RegionBackend:
    """``MemoryBackend`` of one device: plug needs only a TLB flush (QEMU populates nothing:
    data a rogue write left in an unplugged block is still there when it is plugged);
    unplug discards, which also frees whatever a rogue write made the host back."""

    def __init__(self, mem: HostMemory, flush_tlb: Callable[[], None]) -> None:
        self.mem = mem
        self._flush_tlb = flush_tlb
        self.discarded: Callable[[int, int], None] = lambda offset, size: None
        """Told after every discard (stage 2 forgets what was written there)."""

    def plug(self, offset: int, size: int) -> None:
        self._flush_tlb()

    def unplug(self, offset: int, size: int) -> None:
        self._flush_tlb()
        self.mem.discard(offset, size)
        self.discarded(offset, size)


class _LazyDma:
    """Lets transports be built before the board's ``DmaMemory`` exists."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def read(self, gpa: int, size: int) -> bytes:
        return self._board.dma.read(gpa, size)

    def write(self, gpa: int, data: bytes) -> None:
        self._board.dma.write(gpa, data)


UartWrite = Callable[[int], None]


class Board:
    """The hardware of one machine; see the module docstring."""

    def __init__(self, config: MachineConfig, image: bytes, *, emit: Callable[[Event], None],
                 raise_irq: Callable[[], None], uart_write: UartWrite,
                 raise_event: Callable[[int], None] = lambda bits: None) -> None:
        self.config = config
        self.layout: MachineLayout = config.layout()
        self.image = image
        self._emit = emit
        self._raise_irq = raise_irq
        self._uart_write = uart_write
        # Device state changes under this lock: the guest's MMIO on the vCPU thread, a host
        # resize on any thread, snapshots copy under it (lock order: device_lock, then the
        # vCPU runner's condition).
        self.device_lock = threading.RLock()

        self.uc = new_engine()
        self.boot_ram = HostMemory(self.layout.boot_ram_base, self.layout.boot_ram_size, "ram")
        self.uc.mem_map_ptr(self.boot_ram.gpa, self.boot_ram.size, UC_PROT_ALL,
                            self.boot_ram.pointer)
        self.zero_page = HostMemory(ZERO_PAGE_PA, abi.PAGE_SIZE, "zero-page")
        self.uc.mem_map_ptr(ZERO_PAGE_PA, abi.PAGE_SIZE, UC_PROT_READ, self.zero_page.pointer)
        self.machine_type = self.layout.machine
        self.stage2 = Stage2(ZERO_PAGE_PA,
                             unassigned_ignored=self.machine_type.unassigned_access == "ignore")
        # Only the image is executable. Data pages without EXEC take QEMU's fast store path
        # (an executable page must check every store for self-modifying code): 4x faster.
        text_end = _align_up(abi.IMAGE_BASE + len(image), TLB_PAGE_SIZE)
        self.stage2.add_identity(abi.IMAGE_BASE, text_end - abi.IMAGE_BASE, UC_PROT_ALL)
        if config.behaviour_model != "xen":  # the Xen model's RAM is its physmap window
            self.stage2.add_identity(self.boot_ram.gpa, self.boot_ram.size,
                                     UC_PROT_READ | UC_PROT_WRITE)
        self.stage2.add_identity(abi.UART_BASE, abi.PAGE_SIZE, UC_PROT_READ | UC_PROT_WRITE)
        self.stage2.add_identity(abi.VIRTIO_MMIO_BASE, abi.PAGE_SIZE,
                                 UC_PROT_READ | UC_PROT_WRITE)
        self.uc.mmio_map(abi.UART_BASE, abi.PAGE_SIZE, self._uart_read, None,
                         self._on_uart_write, None)

        self.devices: dict[str, VirtioMemDevice] = {}
        self.transports: list[VirtioMmioTransport] = []
        self.regions: dict[str, HostMemory] = {}
        self._build_devices()
        self.balloon: VirtioBalloonDevice | None = None
        self.balloon_transport: VirtioMmioTransport | None = None
        self.balloon_ram = BalloonRam(self.ram, self.ram_size)
        self._stats_timer = HostTimer(self._stats_poll, "balloon-stats")
        self._build_balloon()
        # virtio-mmio slots in order: the memory devices, then the balloon
        self.mmio_slots: list[VirtioMmioTransport] = [*self.transports] + (
            [self.balloon_transport] if self.balloon_transport is not None else [])
        backed = [(d, self.regions[d.id]) for d in self.devices.values()]
        self.dma = DmaMemory(self.boot_ram, backed)
        self.cpu_view = CpuView(self.boot_ram, backed)
        self.uc.mmio_map(abi.VIRTIO_MMIO_BASE, abi.PAGE_SIZE, self._virtio_read, None,
                         self._virtio_write, None)
        # ACPI memory hotplug (QEMU virt's GED + memory hotplug registers) and the DIMM area
        self.hotplug = DimmHotplug(config, self.layout, self.uc, self.stage2, emit=emit,
                                   raise_event=lambda: raise_event(abi.EV_ACPI),
                                   flush_tlb=self.flush_tlb, device_lock=self.device_lock)
        for base, read, write in ((abi.GED_BASE, self._ged_read, self._ignore_write),
                                  (abi.MHP_BASE, self._mhp_read, self._mhp_write)):
            self.stage2.add_identity(base, abi.PAGE_SIZE, UC_PROT_READ | UC_PROT_WRITE)
            self.uc.mmio_map(base, abi.PAGE_SIZE, read, None, write, None)
        #: the Xen / Hyper-V behaviour model's balloon host side (None: no model)
        self.pv_balloon: PvBalloonHost | None = None
        if config.behaviour_model:
            self.pv_balloon = PvBalloonHost(config.behaviour_model, config.boot_ram,
                                            self.boot_ram, self.hotplug.ramblocks,
                                            raise_event, self.flush_tlb, self.device_lock)
            if self.pv_balloon.physmap is not None:
                self.stage2.add_device(self.pv_balloon.physmap)
        self.stage2.install(self.uc)
        self._initial_cpu = self.uc.context_save()
        self._closed = False
        #: asked first about every queue notification: True when it holds the request back
        #: (the teaching pace, ``emulator.pacing``); None passes every notification on
        self.notify_hook: Callable[[VirtioMmioTransport, int], bool] | None = None

    def _build_devices(self) -> None:
        for placed in self.layout.devices:
            cfg = placed.config
            mem = (HugePageMemory(placed.addr, cfg.size, cfg.memdev or cfg.id, cfg.page_size)
                   if cfg.page_size else HostMemory(placed.addr, cfg.size, cfg.memdev or cfg.id))
            self.uc.mem_map_ptr(mem.gpa, mem.size, UC_PROT_READ | UC_PROT_WRITE, mem.pointer)
            options = VirtioMemOptions(
                unplugged_inaccessible=placed.unplugged_inaccessible,
                acpi_pxm=len(self.layout.nodes) > 1 or bool(self.config.nodes),
                persistent_suspend=self.config.persistent_suspend,
                usable_extent=self.machine_type.usable_extent,
                rfc_shrink_on_reboot=self.config.rfc_shrink_on_reboot,
                dynamic_memslots=cfg.dynamic_memslots,
                nb_memslots=placed.nb_memslots,
                memslot_size=placed.memslot_size,
                rfc_write_protect=cfg.rfc_write_protect,
                guest_requests=cfg.guest_requests,
                backend_page_size=cfg.page_size or abi.PAGE_SIZE,
                memory_type=cfg.memory_type,
            )
            backend = _RegionBackend(mem, self.flush_tlb)
            device = VirtioMemDevice(
                cfg.id,
                addr=placed.addr,
                region_size=cfg.size,
                block_size=cfg.block_size,
                node_id=cfg.node,
                requested_size=cfg.requested_size,
                options=options,
                backend=backend,
                emit=self._emit,
            )
            backend.discarded = functools.partial(self.stage2.forget_writes, device)
            # the transport attaches itself as the device's config-change notifier
            transport = VirtioMmioTransport(device, _LazyDma(self), self._raise_irq, self._emit)
            self.devices[cfg.id] = device
            self.transports.append(transport)
            self.regions[cfg.id] = mem
            self.stage2.add_device(device)

    def _build_balloon(self) -> None:
        cfg = self.config.balloon
        if cfg is None:
            return
        options = BalloonOptions(deflate_on_oom=cfg.deflate_on_oom,
                                 free_page_reporting=cfg.free_page_reporting,
                                 page_poison=cfg.page_poison, must_tell_host=cfg.must_tell_host)
        balloon = VirtioBalloonDevice(cfg.id, options=options, backend=self.balloon_ram,
                                      emit=self._emit)
        balloon.schedule_poll = self._stats_timer.arm
        self.balloon_transport = VirtioMmioTransport(balloon, _LazyDma(self), self._raise_irq,
                                                     self._emit)
        self.balloon = balloon
        if cfg.stats_polling_interval:
            balloon.set_poll_interval(cfg.stats_polling_interval)

    def ram_size(self) -> int:
        """QEMU 7.2's ``get_current_ram_size()``: ``-m`` RAM plus pc-dimm memory. virtio-mem
        memory does not count (vmemlab has no pc-dimm yet)."""
        return self.layout.boot_ram_size

    def _stats_poll(self) -> None:
        """The balloon's stats timer fired (on the timer's thread)."""
        with self.device_lock:
            if self.balloon is not None and not self._closed:
                self.balloon.stats_timer_expired()

    # ---------------------------------------------------------------- firmware

    def bootinfo(self, cmdline: str) -> bytes:
        """``struct abi_bootinfo`` (docs/abi.md): RAM, NUMA nodes, virtio windows, cmdline."""
        lay = self.layout
        slots = [(abi.VIRTIO_MMIO_BASE + d.index * abi.VIRTIO_MMIO_STRIDE, d.config.node)
                 for d in lay.devices]
        if lay.balloon_slot is not None:  # not NUMA aware: no node of its own (node 0)
            slots.append((abi.VIRTIO_MMIO_BASE + lay.balloon_slot * abi.VIRTIO_MMIO_STRIDE, 0))
        head = abi.BOOTINFO_HEAD.pack(
            abi.BOOTINFO_MAGIC, abi.BOOTINFO_VERSION, abi.BOOTINFO_SIZE,
            lay.boot_ram_base, lay.boot_ram_size, abi.IMAGE_BASE + len(self.image),
            abi.UART_BASE, len(lay.nodes), len(slots),
        )
        nodes = b"".join(
            abi.BOOTINFO_NODE.pack(n.node_id, n.ram_base, n.ram_size) for n in lay.nodes
        ).ljust(abi.MAX_NODES * abi.BOOTINFO_NODE.size, b"\0")
        virtio = b"".join(abi.BOOTINFO_VIRTIO.pack(base, node) for base, node in slots
                          ).ljust(abi.MAX_DEVICES * abi.BOOTINFO_VIRTIO.size, b"\0")
        text = cmdline.encode()[: abi.CMDLINE_LEN - 1].ljust(abi.CMDLINE_LEN, b"\0")
        hotplug = self.hotplug.bootinfo(abi.MODELS.get(self.config.behaviour_model, 0))
        return head + nodes + virtio + text + hotplug

    def load_guest(self, cmdline: str) -> None:
        """Put image and boot info in RAM and the vCPU at the entry point, as firmware would."""
        self.boot_ram.write(abi.IMAGE_BASE - abi.RAM_BASE, self.image)
        self.boot_ram.write(0, self.bootinfo(cmdline))
        self.uc.context_restore(self._initial_cpu)
        self.uc.reg_write(arm.UC_ARM64_REG_PC, abi.IMAGE_BASE)
        self.uc.reg_write(arm.UC_ARM64_REG_X0, abi.RAM_BASE)
        self.flush_tlb()

    def reset_devices(self) -> None:
        """The devices' part of a system reset (virtio-mem unplugs everything; the balloon
        keeps its target; DIMMs stay)."""
        with self.device_lock:
            if self.pv_balloon is not None:
                self.pv_balloon.system_reset()
            for dev in self.devices.values():
                dev.system_reset()
            if self.balloon is not None:
                self.balloon.system_reset()
                self.balloon_ram.forget()  # the new guest gave nothing: it has all its RAM
            for transport in self.mmio_slots:
                transport.reset_state()
            self.stage2.sync()  # the features are gone; the next boot's load flushes the TLB

    def populate_huge_pages(self, dev_id: str, first: int, count: int) -> None:
        """A read of unplugged blocks went through: a hugetlb backend has no shared zero
        page, so the host populated their huge pages (``emulator.huge_pages``)."""
        mem = self.regions.get(dev_id)
        if isinstance(mem, HugePageMemory):
            bs = self.devices[dev_id].block_size
            mem.populate(first * bs, count * bs)

    def host_read(self, gpa: int, size: int) -> None:
        """The host itself read guest memory (HMP ``xp``): in a hugetlb region that faults
        in the huge pages it touched, plugged or not (transcript 13: Free 600 -> 599)."""
        for mem in self.regions.values():
            if isinstance(mem, HugePageMemory) and gpa < mem.gpa + mem.size \
                    and mem.gpa < gpa + size:
                start = max(gpa, mem.gpa)
                mem.populate(start - mem.gpa, min(gpa + size, mem.gpa + mem.size) - start)

    def flush_tlb(self) -> None:
        """Forget every stage-2 decision (after any change of block state or features)."""
        self.stage2.sync()
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    @property
    def pc(self) -> int:
        return int(self.uc.reg_read(arm.UC_ARM64_REG_PC))

    def fatal_access(self, window: str | None) -> str | None:
        """Why a refused access in stage-2 ``window`` ends the machine (None: a fault)."""
        return self.pv_balloon.fatal(window) if self.pv_balloon is not None else None

    # ---------------------------------------------------------------- state for migration

    def ram(self) -> list[HostMemory]:
        """Every RAM block: boot RAM first, the device regions in device order, then DIMMs."""
        return [self.boot_ram, *self.regions.values(), *self.hotplug.ramblocks()]

    def ramblocks(self) -> dict[str, HostMemory]:
        """Every RAM block by QEMU's RAMBlock id (what migration streams and ``info ramblock``
        name): the machine type's ``default_ram_id`` for boot RAM, and for a virtio-mem
        device's memdev its PCI path (``vmstate_register_ram(…, dev)``: the device in slot
        3 + index), e.g. ``0000:00:03.0/mem0``."""
        blocks = {self.layout.machine.default_ram_id: self.boot_ram}
        for placed in self.layout.devices:
            blocks[device_ramblock_id(placed.index, placed.config.memdev or placed.config.id)] \
                = self.regions[placed.config.id]
        return blocks

    def cpu_state(self) -> dict[str, int]:
        """The vCPU registers a saved machine carries."""
        state = {name: int(self.uc.reg_read(reg)) for name, reg in CPU_REGISTERS.items()}
        state["spsr_el1"] = int(self.uc.cpr_read(*SPSR_EL1))
        return state

    def restore_cpu(self, state: dict[str, int]) -> None:
        """Registers from ``cpu_state()`` (every name present, every value a u64)."""
        for name, reg in CPU_REGISTERS.items():
            if name not in _RESTORE_LAST:
                self.uc.reg_write(reg, state[name])
        self.uc.cpr_write(*SPSR_EL1, state["spsr_el1"])
        for name in _RESTORE_LAST:
            self.uc.reg_write(CPU_REGISTERS[name], state[name])
        self.flush_tlb()

    def balloon_state(self) -> dict[str, Any] | None:
        """The balloon's and its transport's saved state (under the lock), or None."""
        if self.balloon is None or self.balloon_transport is None:
            return None
        with self.device_lock:
            return {"device": self.balloon.save(), "transport": self.balloon_transport.save()}

    def restore_balloon(self, state: dict[str, Any]) -> None:
        """Load ``balloon_state()`` output; a kept stats buffer is popped again later, as
        QEMU rewinds the stats queue (``virtqueue_rewind``)."""
        assert self.balloon is not None and self.balloon_transport is not None
        held = self.balloon.load(state["device"])
        self.balloon_transport.load(state["transport"])
        if held:
            self.balloon_transport.rewind(balloon_protocol.STATSQ)

    def devices_state(self) -> dict[str, dict[str, Any]]:
        """Each device's and its transport's saved state, by device id (under the lock)."""
        with self.device_lock:
            return {dev_id: {"device": dev.save(), "transport": self.transports[i].save()}
                    for i, (dev_id, dev) in enumerate(self.devices.items())}

    # ---------------------------------------------------------------- MMIO

    def _uart_read(self, _uc: object, offset: int, size: int, _ud: object) -> int:
        return 0

    def _on_uart_write(self, _uc: object, offset: int, size: int, value: int,
                       _ud: object) -> None:
        if offset == 0:
            self._uart_write(value & 0xFF)

    def _virtio_read(self, _uc: object, offset: int, size: int, _ud: object) -> int:
        index, reg = divmod(offset, abi.VIRTIO_MMIO_STRIDE)
        if index < len(self.mmio_slots):
            with self.device_lock:
                return self.mmio_slots[index].read(reg, size)
        return 0  # an empty slot reads as zero (no magic value): the guest skips it

    def _virtio_write(self, _uc: object, offset: int, size: int, value: int,
                      _ud: object) -> None:
        index, reg = divmod(offset, abi.VIRTIO_MMIO_STRIDE)
        if index < len(self.mmio_slots):
            transport = self.mmio_slots[index]
            hook = self.notify_hook
            if (reg == QUEUE_NOTIFY and size == 4 and hook is not None
                    and hook(transport, value & 0xFFFF)):
                return  # held in flight: answered later by ``answer_queue``
            with self.device_lock:
                transport.write(reg, size, value)
                # feature negotiation and device resets change what stage 2 allows
                if self.stage2.sync():
                    self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def answer_queue(self, transport: VirtioMmioTransport, index: int) -> None:
        """Process a held queue notification now (vCPU thread): what the guest's notify
        would have done at once without a teaching pace."""
        with self.device_lock:
            transport.process_queue(index)
            if self.stage2.sync():
                self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def _mhp_read(self, _uc: object, offset: int, size: int, _ud: object) -> int:
        return self.hotplug.mhp_read(offset, size)

    def _mhp_write(self, _uc: object, offset: int, size: int, value: int,
                   _ud: object) -> None:
        self.hotplug.mhp_write(offset, size, value)

    def _ged_read(self, _uc: object, offset: int, size: int, _ud: object) -> int:
        return self.hotplug.ged_read(offset, size)

    def _ignore_write(self, _uc: object, offset: int, size: int, value: int,
                      _ud: object) -> None:
        """A register the guest may not write: ignored, as QEMU's read-only registers are."""

    # ---------------------------------------------------------------- teardown

    def close(self) -> None:
        """Release the engine, then host memory (the engine must let go of the pointers first).

        Closing the engine (the binding's weakref finalizer, ``uc_close``) is instant;
        ``mem_unmap`` of a multi-GiB region takes seconds, so it is only the fallback.
        """
        if self._closed:
            return
        with self.device_lock:  # a stats timer that fired waits for it, then sees _closed
            self._closed = True
            self._stats_timer.close()
        finalizer = getattr(self.uc, "_Uc__finalizer", None)
        mems = [self.boot_ram, self.zero_page, *self.regions.values()]
        if finalizer is None:
            mems += self.hotplug.ramblocks()
        if finalizer is not None:
            finalizer()
        else:
            for mem in mems:
                with contextlib.suppress(UcError):
                    self.uc.mem_unmap(mem.gpa, mem.size)
        for mem in mems:
            with contextlib.suppress(BufferError, ValueError):
                mem.close()
        self.hotplug.close()
