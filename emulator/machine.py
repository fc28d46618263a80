"""The emulated machine: one AArch64 vCPU on Unicorn, boot RAM, virtio-mem devices.

A ``Machine`` owns one Unicorn instance and drives it from its own worker thread. Other
threads never touch Unicorn: they post calls (``_call``) that the worker runs when the vCPU
stops at its next safe point, an SMC call (see ``_kick`` for why never mid-block). Host
register writes and snapshots need no stop at all: they take the device lock.

The guest talks to the machine through MMIO (console, virtio-mmio) and SMC
calls (wait for an event, report status, finish a workload command, PSCI reset/off); see
``emulator/abi.py``.

Public surface (all thread-safe): ``start``, ``pause``, ``resume``, ``close``,
``set_requested_size``, ``system_reset``, ``guest_command``, ``snapshot``, ``save``,
``load_state``, ``read_memory``, ``wait_until``, and ``bus`` for events.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar, cast

from unicorn import (
    UC_ARCH_ARM64,
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_ERR_EXCEPTION,
    UC_ERR_FETCH_UNMAPPED,
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_UNMAPPED,
    UC_HOOK_INTR,
    UC_HOOK_TLB_FILL,
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

from device.errors import ConfigError, VmemError
from device.events import Event
from device.virtio_mem import VirtioMemDevice, VirtioMemOptions
from device.virtio_mmio import VirtioMmioTransport
from emulator import abi, exceptions
from emulator.backing import HostMemory
from emulator.config import MachineConfig, MachineLayout
from emulator.events import (
    ConsoleOutput,
    EventBus,
    GuestCommandDone,
    GuestStatus,
    Reset,
    RunStateChange,
    Violation,
    ZeroPageRead,
)
from emulator.guest_memory import CpuView, DmaMemory
from emulator.image import load_guest_image
from emulator.stage2 import TLB_PAGE_SIZE, Stage2

T = TypeVar("T")

# Host-physical home of the shared zero page: outside every window stage 2 maps, so the guest
# can never reach it except through a read-only alias.
ZERO_PAGE_PA = 0xFF_FFFF_F000
THROTTLED_SLICE_S = 0.002  # how long the guest runs between pauses when slowed down
STUCK_GUEST_S = 1.0  # no safe point for this long: stop the vCPU asynchronously
MIN_SPEED = 0.001
EXCP_SMC = 13  # QEMU's EXCP_* numbers, as UC_HOOK_INTR reports them
MAX_NESTED_FAULTS = 4
_FAULTS = (UC_ERR_EXCEPTION, UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_FETCH_UNMAPPED)

COMMANDS = {
    "alloc": abi.CMD_ALLOC,
    "free": abi.CMD_FREE,
    "touch": abi.CMD_TOUCH,
    "verify": abi.CMD_VERIFY,
    "dump": abi.CMD_DUMP,
    "rogue-write": abi.CMD_ROGUE_WRITE,
    "read": abi.CMD_READ,
    "stats": abi.CMD_STATS,
    "reboot": abi.CMD_REBOOT,
    "poweroff": abi.CMD_POWEROFF,
    "online": abi.CMD_ONLINE,
}
_COMMAND_NAMES = {v: k for k, v in COMMANDS.items()}


class MachineError(VmemError):
    """A request the machine cannot carry out in its current state."""


@dataclass(frozen=True)
class GuestResult:
    """What a workload command returned from inside the guest."""

    command: str
    status: int  # 0 or -errno
    values: tuple[int, int]

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass
class _PendingCommand:
    seq: int
    code: int
    args: tuple[int, int, int]
    future: Future[GuestResult]


class _RegionBackend:
    """``MemoryBackend`` of one device: plug needs only a TLB flush; unplug discards."""

    def __init__(self, mem: HostMemory, flush_tlb: Callable[[], None]) -> None:
        self.mem = mem
        self._flush_tlb = flush_tlb

    def plug(self, offset: int, size: int) -> None:
        self._flush_tlb()

    def unplug(self, offset: int, size: int) -> None:
        self._flush_tlb()
        self.mem.discard(offset, size)


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def _signed(value: int) -> int:
    return value - (1 << 64) if value & (1 << 63) else value


class Machine:
    """One emulated machine; see the module docstring for the threading model."""

    def __init__(self, config: MachineConfig, *, image: bytes | None = None,
                 incoming: bool = False) -> None:
        self.config = config
        self.layout: MachineLayout = config.layout()
        self.bus = EventBus()
        self.image = image if image is not None else load_guest_image()
        self.runstate = "inmigrate" if incoming else "prelaunch"
        self.console: deque[str] = deque(maxlen=2000)
        self._console_buf = bytearray()
        self.guest_states: dict[str, str] = {}
        self.guest_booted = False
        self.guest_faults = 0
        self._view_addr = 0
        self._boot_ns = time.monotonic_ns()

        self._cond = threading.Condition()
        # Device state changes under this lock: the guest's MMIO on the vCPU thread, a host
        # resize on any thread, snapshots copy under it (lock order: device_lock, then _cond).
        self.device_lock = threading.RLock()
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._commands: deque[_PendingCommand] = deque()
        self._in_flight: dict[int, _PendingCommand] = {}
        self._next_cmd_seq = 1
        self._pending_events = 0
        self._waiting = False
        self._wait_deadline: float | None = None
        self._reset_request: tuple[bool, str] | None = None
        self._nested_faults = 0
        self._thread: threading.Thread | None = None
        self._quit = False
        self._in_emu = False
        self._closed = False
        self.speed = 1.0  # fraction of the time the vCPU runs (presentation speed control)
        self._stop_wanted = False
        self._stop_wanted_since = 0.0
        self._slice_start = 0.0
        self.last_migration_bytes = 0

        self.uc = cast(UcAArch64, Uc(UC_ARCH_ARM64, UC_MODE_ARM))
        self.uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        assert self.uc.ctl_get_page_size() == TLB_PAGE_SIZE
        self.boot_ram = HostMemory(self.layout.boot_ram_base, self.layout.boot_ram_size, "ram")
        self.uc.mem_map_ptr(self.boot_ram.gpa, self.boot_ram.size, UC_PROT_ALL,
                            self.boot_ram.pointer)
        self._zero_page = HostMemory(ZERO_PAGE_PA, abi.PAGE_SIZE, "zero-page")
        self.uc.mem_map_ptr(ZERO_PAGE_PA, abi.PAGE_SIZE, UC_PROT_READ, self._zero_page.pointer)
        self.stage2 = Stage2(ZERO_PAGE_PA)
        # Only the image is executable. Data pages without EXEC take QEMU's fast store path
        # (an executable page must check every store for self-modifying code): 4x faster.
        text_end = _align_up(abi.IMAGE_BASE + len(self.image), TLB_PAGE_SIZE)
        self.stage2.add_identity(abi.IMAGE_BASE, text_end - abi.IMAGE_BASE, UC_PROT_ALL)
        self.stage2.add_identity(self.boot_ram.gpa, self.boot_ram.size,
                                 UC_PROT_READ | UC_PROT_WRITE)
        self.stage2.add_identity(abi.UART_BASE, abi.PAGE_SIZE, UC_PROT_READ | UC_PROT_WRITE)
        self.stage2.add_identity(abi.VIRTIO_MMIO_BASE, abi.PAGE_SIZE,
                                 UC_PROT_READ | UC_PROT_WRITE)
        self.uc.mmio_map(abi.UART_BASE, abi.PAGE_SIZE, self._uart_read, None,
                         self._uart_write, None)

        self.devices: dict[str, VirtioMemDevice] = {}
        self.transports: list[VirtioMmioTransport] = []
        self.regions: dict[str, HostMemory] = {}
        self._build_devices()
        backed = [(d, self.regions[d.id]) for d in self.devices.values()]
        self.dma = DmaMemory(self.boot_ram, backed)
        self.cpu_view = CpuView(self.boot_ram, backed)
        self.uc.mmio_map(abi.VIRTIO_MMIO_BASE, abi.PAGE_SIZE, self._virtio_read, None,
                         self._virtio_write, None)

        self.uc.hook_add(UC_HOOK_TLB_FILL, self.stage2.fill)
        self.uc.hook_add(UC_HOOK_INTR, self._on_intr)
        self._initial_cpu = self.uc.context_save()
        self._load_guest()

    # ---------------------------------------------------------------- construction

    def _build_devices(self) -> None:
        for placed in self.layout.devices:
            cfg = placed.config
            mem = HostMemory(placed.addr, cfg.size, cfg.memdev or cfg.id)
            self.uc.mem_map_ptr(mem.gpa, mem.size, UC_PROT_READ | UC_PROT_WRITE, mem.pointer)
            options = VirtioMemOptions(
                unplugged_inaccessible=cfg.unplugged_inaccessible,
                acpi_pxm=len(self.layout.nodes) > 1 or bool(self.config.nodes),
                persistent_suspend=self.config.persistent_suspend,
                usable_extent=cfg.usable_extent,
                rfc_shrink_on_reboot=self.config.rfc_shrink_on_reboot,
            )
            device = VirtioMemDevice(
                cfg.id,
                addr=placed.addr,
                region_size=cfg.size,
                block_size=cfg.block_size,
                node_id=cfg.node,
                requested_size=cfg.requested_size,
                options=options,
                backend=_RegionBackend(mem, self._flush_tlb),
                emit=self._emit,
            )
            # the transport attaches itself as the device's config-change notifier
            transport = VirtioMmioTransport(device, _LazyDma(self), self._raise_irq, self._emit)
            self.devices[cfg.id] = device
            self.transports.append(transport)
            self.regions[cfg.id] = mem
            self.stage2.add_device(device)
            self.guest_states[cfg.id] = "absent"

    def _bootinfo(self) -> bytes:
        lay = self.layout
        head = abi.BOOTINFO_HEAD.pack(
            abi.BOOTINFO_MAGIC, abi.BOOTINFO_VERSION, abi.BOOTINFO_SIZE,
            lay.boot_ram_base, lay.boot_ram_size, abi.IMAGE_BASE + len(self.image),
            abi.UART_BASE, len(lay.nodes), len(lay.devices),
        )
        nodes = b"".join(
            abi.BOOTINFO_NODE.pack(n.node_id, n.ram_base, n.ram_size) for n in lay.nodes
        ).ljust(abi.MAX_NODES * abi.BOOTINFO_NODE.size, b"\0")
        virtio = b"".join(
            abi.BOOTINFO_VIRTIO.pack(
                abi.VIRTIO_MMIO_BASE + d.index * abi.VIRTIO_MMIO_STRIDE, d.config.node
            )
            for d in lay.devices
        ).ljust(abi.MAX_DEVICES * abi.BOOTINFO_VIRTIO.size, b"\0")
        cmdline = self.config.cmdline.encode()[: abi.CMDLINE_LEN - 1].ljust(abi.CMDLINE_LEN, b"\0")
        return head + nodes + virtio + cmdline

    def _load_guest(self) -> None:
        """Put image and boot info in RAM and the vCPU at the entry point, as firmware would."""
        self.boot_ram.write(abi.IMAGE_BASE - abi.RAM_BASE, self.image)
        self.boot_ram.write(0, self._bootinfo())
        self.uc.context_restore(self._initial_cpu)
        self.uc.reg_write(arm.UC_ARM64_REG_PC, abi.IMAGE_BASE)
        self.uc.reg_write(arm.UC_ARM64_REG_X0, abi.RAM_BASE)
        self._boot_ns = time.monotonic_ns()
        self._view_addr = 0
        self.guest_booted = False
        self._waiting = False
        self._wait_deadline = None
        self._pending_events = 0
        self._nested_faults = 0
        self._flush_tlb()

    # ---------------------------------------------------------------- thread plumbing

    def start(self, *, paused: bool = False) -> None:
        """Start the vCPU thread and run the guest (a no-op if already started).

        ``paused=True`` starts the thread but leaves the guest where it is ("prelaunch", or
        "inmigrate" for an incoming machine), like QEMU's ``-S``: ``resume()`` runs it.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="vcpu", daemon=True)
            self._thread.start()
            threading.Thread(target=self._watchdog, name="vcpu-watchdog", daemon=True).start()
        if self.runstate == "prelaunch" and not paused:
            self._call(lambda: self._set_runstate("running"))

    def close(self) -> None:
        """Stop the vCPU thread and release host memory."""
        with self._cond:
            self._quit = True
            self._cond.notify_all()
        self._kick()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._fail_commands("machine closed")
        if self._closed:
            return
        self._closed = True
        # Unicorn must let go of the host pointers before the host memory goes away. Closing
        # the engine (the binding's weakref finalizer, uc_close) is instant; mem_unmap of a
        # multi-GiB region takes seconds, so it is only the fallback.
        finalizer = getattr(self.uc, "_Uc__finalizer", None)
        mems = [self.boot_ram, self._zero_page, *self.regions.values()]
        if finalizer is not None:
            finalizer()
        else:
            for mem in mems:
                with contextlib.suppress(UcError):
                    self.uc.mem_unmap(mem.gpa, mem.size)
        for mem in mems:
            with contextlib.suppress(BufferError, ValueError):
                mem.close()

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kick(self) -> None:
        """Ask the vCPU to come back to the loop at its next safe point.

        ``emu_stop()`` from another thread (and Unicorn's own ``timeout``, which is the same
        thing) can land while a hook runs and make Unicorn leave mid-block with a stale PC:
        the guest then replays instructions (measured: 21 of 40 boots corrupted under a
        stream of calls). So the vCPU stops itself, inside an SMC call, where the PC is
        exact; the guest makes one at least every few milliseconds (WAIT when idle, YIELD in
        long loops). Only a guest that makes none for ``STUCK_GUEST_S`` is stopped the
        asynchronous way, by the watchdog.
        """
        with self._cond:
            if not self._stop_wanted:
                self._stop_wanted = True
                self._stop_wanted_since = time.monotonic()
            self._cond.notify_all()

    def _call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the vCPU thread between slices and return its result."""
        if self._closed:
            raise MachineError("the machine is closed")
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return fn()
        future: Future[T] = Future()
        with self._cond:
            self._calls.append((fn, future))
            self._cond.notify_all()
        self._kick()
        return future.result(timeout)

    def _run_calls(self) -> None:
        while True:
            with self._cond:
                if not self._calls:
                    return
                fn, future = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread, never lost
                future.set_exception(exc)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._ready_to_run():
                    if self._quit:
                        return
                    self._cond.wait(self._wait_timeout())
                if self._quit:
                    return
            with self._cond:
                self._stop_wanted = False  # calls posted from here on ask again
            self._run_calls()
            if self.runstate != "running":
                continue
            if self._waiting and not self._finish_wait():
                continue
            self._run_slice()
            if self.speed < 1.0:
                self._throttle()

    def _watchdog(self) -> None:
        """Stop a guest that makes no SMC call for a long time (it is stuck or looping)."""
        while not self._quit:
            with self._cond:
                self._cond.wait(STUCK_GUEST_S / 4)
                stuck = (self._stop_wanted and self._in_emu
                         and time.monotonic() - self._stop_wanted_since > STUCK_GUEST_S)
            if stuck:
                self.uc.emu_stop()

    def _throttle(self) -> None:
        """Slow the guest down for a room to follow: sleep so it runs ``speed`` of the time."""
        pause = THROTTLED_SLICE_S * (1.0 / max(self.speed, MIN_SPEED) - 1.0)
        with self._cond:
            self._cond.wait_for(lambda: self._quit or bool(self._calls), pause)

    def _ready_to_run(self) -> bool:
        if self._quit or self._calls:
            return True
        if self.runstate != "running":
            return False
        if not self._waiting:
            return True
        return self._deliverable() != 0

    def _wait_timeout(self) -> float | None:
        if self.runstate == "running" and self._waiting and self._wait_deadline is not None:
            return max(0.0, self._wait_deadline - time.monotonic())
        return None

    def _deliverable(self) -> int:
        events = self._pending_events
        if self._commands:
            events |= abi.EV_COMMAND
        if self._wait_deadline is not None and time.monotonic() >= self._wait_deadline:
            events |= abi.EV_TIMEOUT
        return events

    def _finish_wait(self) -> bool:
        """Return from the guest's WAIT call with what is pending."""
        events = self._deliverable()
        if not events:
            return False
        self._pending_events = 0
        regs = [events, 0, 0, 0, 0, 0]
        if events & abi.EV_COMMAND:
            with self._cond:
                cmd = self._commands.popleft()
            self._in_flight[cmd.seq] = cmd
            regs[1:6] = [cmd.seq, cmd.code, *cmd.args]
        for i, value in enumerate(regs):
            self.uc.reg_write(arm.UC_ARM64_REG_X0 + i, value & 0xFFFF_FFFF_FFFF_FFFF)
        self._waiting = False
        self._wait_deadline = None
        return True

    def _run_slice(self, count: int = 0) -> None:
        pc = self.uc.reg_read(arm.UC_ARM64_REG_PC)
        self.stage2.denied = None
        self._in_emu = True
        self._slice_start = time.monotonic()
        try:
            self.uc.emu_start(pc, 0, count=count)
        except UcError as err:
            self._on_uc_error(err)
        except Exception as exc:  # a bug in a hook: contain it, report it, stop the vCPU
            self._set_runstate("internal-error", f"{type(exc).__name__}: {exc}")
        finally:
            self._in_emu = False
        self._publish_zero_reads()
        if self._reset_request is not None:
            guest, reason = self._reset_request
            self._reset_request = None
            self._do_system_reset(guest, reason)

    # ---------------------------------------------------------------- guest → host

    def _emit(self, event: Event) -> None:
        self.bus.publish(event)

    def _flush_tlb(self) -> None:
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    def _raise_irq(self) -> None:
        with self._cond:
            self._pending_events |= abi.EV_VIRTIO
            self._cond.notify_all()

    def _uart_read(self, _uc: object, offset: int, size: int, _ud: object) -> int:
        return 0

    def _uart_write(self, _uc: object, offset: int, size: int, value: int, _ud: object) -> None:
        if offset != 0:
            return
        ch = value & 0xFF
        if ch == 0x0A:
            line = self._console_buf.decode("utf-8", "replace")
            self._console_buf.clear()
            self.console.append(line)
            self.bus.publish(ConsoleOutput(line))
        elif ch != 0x0D and len(self._console_buf) < 4096:
            self._console_buf.append(ch)

    def _virtio_read(self, _uc: object, offset: int, size: int, _ud: object) -> int:
        index, reg = divmod(offset, abi.VIRTIO_MMIO_STRIDE)
        if index < len(self.transports):
            with self.device_lock:
                return self.transports[index].read(reg, size)
        return 0  # an empty slot reads as zero (no magic value): the guest skips it

    def _virtio_write(self, _uc: object, offset: int, size: int, value: int, _ud: object) -> None:
        index, reg = divmod(offset, abi.VIRTIO_MMIO_STRIDE)
        if index < len(self.transports):
            with self.device_lock:
                self.transports[index].write(reg, size, value)

    def _on_intr(self, uc: UcAArch64, intno: int, _ud: object) -> None:
        if intno == EXCP_SMC:
            self._on_smc(uc)
            return
        # Anything else (UDEF, SVC, BRK, HVC) is delivered to the guest as a synchronous
        # exception so its handler can report it; Unicorn would otherwise loop on it.
        self._pending_exception = (intno, uc.reg_read(arm.UC_ARM64_REG_PC))
        uc.emu_stop()

    _pending_exception: tuple[int, int] | None = None

    def _on_smc(self, uc: UcAArch64) -> None:
        x = [uc.reg_read(arm.UC_ARM64_REG_X0 + i) for i in range(6)]
        fid = x[0] & 0xFFFF_FFFF
        self._publish_zero_reads()  # what the guest read before this call comes first
        self._smc(uc, fid, x)
        # every SMC is a safe point: the PC is exact, so stopping here never replays anything
        if self._stop_wanted or (self.speed < 1.0 and
                                 time.monotonic() - self._slice_start > THROTTLED_SLICE_S):
            uc.emu_stop()

    def _smc(self, uc: UcAArch64, fid: int, x: list[int]) -> None:
        if fid == abi.VMEM_CALL_YIELD:
            uc.reg_write(arm.UC_ARM64_REG_X0, 0)
        elif fid == abi.VMEM_CALL_WAIT:
            self._waiting = True
            self._wait_deadline = time.monotonic() + x[1] / 1e6 if x[1] else None
            if self._deliverable() and self._finish_wait():
                return
            uc.emu_stop()
        elif fid == abi.VMEM_CALL_DONE:
            self._command_done(x[1], _signed(x[2]), x[3], x[4])
            uc.reg_write(arm.UC_ARM64_REG_X0, 0)
        elif fid == abi.VMEM_CALL_STATUS:
            self._guest_status(x[1], x[2], x[3], x[4])
            uc.reg_write(arm.UC_ARM64_REG_X0, 0)
        elif fid == abi.VMEM_CALL_TIME:
            uc.reg_write(arm.UC_ARM64_REG_X0, time.monotonic_ns() - self._boot_ns)
        elif fid == abi.PSCI_SYSTEM_RESET:
            self._reset_request = (True, "guest-reset")
            uc.emu_stop()
        elif fid == abi.PSCI_SYSTEM_OFF:
            self._set_runstate("shutdown", "guest-shutdown")
            uc.emu_stop()
        else:
            uc.reg_write(arm.UC_ARM64_REG_X0, abi.SMCCC_NOT_SUPPORTED)

    def _command_done(self, seq: int, status: int, v0: int, v1: int) -> None:
        cmd = self._in_flight.pop(seq, None)
        name = _COMMAND_NAMES.get(cmd.code, "?") if cmd else "?"
        self.bus.publish(GuestCommandDone(seq, name, status, (v0, v1)))
        if cmd is not None and not cmd.future.done():
            cmd.future.set_result(GuestResult(name, status, (v0, v1)))

    def _device_name(self, index: int) -> str | None:
        devs = self.layout.devices
        return devs[index].config.id if 0 <= index < len(devs) else None

    def _guest_status(self, kind: int, a: int, b: int, c: int) -> None:
        if kind == abi.STATUS_BOOTED:
            self._view_addr = a
            self.guest_booted = True
            self.bus.publish(GuestStatus("booted", None, b))
        elif kind == abi.STATUS_DRIVER:
            name = self._device_name(a)
            state = abi.DRIVER_STATES.get(b, f"unknown({b})")
            if name is not None:
                self.guest_states[name] = state
            self.bus.publish(GuestStatus(state, name, _signed(c)))
        elif kind == abi.STATUS_FAULT:
            self.guest_faults += 1
            self.bus.publish(GuestStatus("fault", None, b))
        elif kind == abi.STATUS_PANIC:
            self.bus.publish(GuestStatus("panic", None, b))
            self._set_runstate("guest-panicked", f"ESR {a:#x} FAR {b:#x} ELR {c:#x}")
            self.uc.emu_stop()

    def _on_uc_error(self, err: UcError) -> None:
        pc = self.uc.reg_read(arm.UC_ARM64_REG_PC)
        denied, self.stage2.denied = self.stage2.denied, None
        pending, self._pending_exception = self._pending_exception, None
        if err.errno in _FAULTS and denied is not None:
            self.bus.publish(Violation(denied.device, denied.addr, pc, denied.access,
                                       denied.reason))
            esr = exceptions.abort_syndrome(denied.access, mapped=denied.device is not None)
            self._inject_sync(esr, denied.addr, pc)
        elif pending is not None:
            self._inject_sync(exceptions.unknown_syndrome(), 0, pending[1])
        else:
            self._set_runstate("internal-error", f"{err} at pc {pc:#x}")

    def _inject_sync(self, esr: int, far: int, elr: int) -> None:
        """Deliver a synchronous exception; a guest faulting in its own handler is panicked."""
        nested = exceptions.in_vectors(self.uc, elr)
        self._nested_faults = self._nested_faults + 1 if nested else 0
        if (self._nested_faults >= MAX_NESTED_FAULTS
                or not exceptions.enter_sync_exception(self.uc, esr, far, elr)):
            self._set_runstate("guest-panicked", f"unhandled fault at {elr:#x} (ESR {esr:#x})")

    def _publish_zero_reads(self) -> None:
        for dev, first, count in self.stage2.take_zero_reads():
            outside = (first + count) * dev.block_size > dev.usable_region_size
            self.bus.publish(ZeroPageRead(dev.id, first, count, outside))

    def _set_runstate(self, state: str, reason: str = "") -> None:
        if state != self.runstate:
            self.runstate = state
            self.bus.publish(RunStateChange(state, reason))
            with self._cond:
                self._cond.notify_all()
        if state in ("shutdown", "guest-panicked", "internal-error"):
            self._fail_commands(f"guest is {state}")

    def _fail_commands(self, why: str) -> None:
        with self._cond:
            pending = list(self._commands) + list(self._in_flight.values())
            self._commands.clear()
            self._in_flight.clear()
        for cmd in pending:
            if not cmd.future.done():
                cmd.future.set_exception(MachineError(why))

    def _do_system_reset(self, guest: bool, reason: str, cmdline: str | None = None) -> None:
        with self.device_lock:
            for dev in self.devices.values():
                dev.system_reset()
            for transport in self.transports:
                transport.reset_state()
        if cmdline is not None:
            self.config = self.config.with_cmdline(cmdline)
        self._fail_commands("guest rebooted")
        self.bus.publish(Reset(guest, reason, self.config.cmdline))
        for name in self.guest_states:
            self.guest_states[name] = "absent"
        self._load_guest()
        # QEMU's main loop: a machine that was not running waits in "prelaunch" for "cont"
        if self.runstate not in ("running", "inmigrate"):
            self._set_runstate("prelaunch", "reset")

    # ---------------------------------------------------------------- public control

    def pause(self) -> None:
        """QEMU ``stop``: the vCPU stops between instructions; devices keep their state."""
        self._call(lambda: self._set_runstate("paused", "stop")
                   if self.runstate == "running" else None)

    def resume(self) -> None:
        """QEMU ``cont``."""
        def go() -> None:
            if self.runstate in ("paused", "prelaunch", "postmigrate", "shutdown"):
                self._set_runstate("running", "cont")
        if self._thread is None:
            self.start()
        self._call(go)

    def set_speed(self, speed: float) -> None:
        """Run the guest at ``speed`` (0 < speed <= 1) of full speed, e.g. 0.01 to watch it."""
        if not MIN_SPEED <= speed <= 1.0:
            raise MachineError(f"speed must be between {MIN_SPEED} and 1")
        self.speed = float(speed)
        with self._cond:
            self._cond.notify_all()

    def step(self, instructions: int = 1) -> int:
        """Execute ``instructions`` guest instructions while paused; returns the new PC.

        A guest idling in its WAIT call does not move until an event arrives, as on hardware
        a CPU sitting in WFI would not.
        """
        if instructions < 1:
            raise MachineError("step needs at least one instruction")

        def run() -> int:
            if self.runstate != "paused":
                raise MachineError(f"step needs a paused machine (it is {self.runstate})")
            if not self._waiting or self._finish_wait():
                self._run_slice(count=instructions)
            return int(self.uc.reg_read(arm.UC_ARM64_REG_PC))

        return self._call(run)

    def set_requested_size(self, dev_id: str, size: int) -> None:
        """``qom-set ID requested-size SIZE``; raises ``ConfigError`` with QEMU's text.

        Like a host writing a device register: done under the device lock on the caller's
        thread, the guest learns of it through the config-change interrupt, as it would.
        """
        device = self.device(dev_id)
        if self._closed:
            raise MachineError("the machine is closed")
        with self.device_lock:
            device.set_requested_size(size)

    def device(self, dev_id: str) -> VirtioMemDevice:
        try:
            return self.devices[dev_id]
        except KeyError:
            raise ConfigError(f"Device '{dev_id}' not found") from None

    def system_reset(self, *, cmdline: str | None = None,
                     reason: str = "host-qmp-system-reset") -> None:
        """QEMU ``system_reset``: devices unplug everything, the guest boots again.

        ``cmdline`` replaces the guest's boot options for this and later boots (e.g.
        ``modprobe.blacklist=virtio_mem`` for a guest without the driver).
        """
        self._call(lambda: self._do_system_reset(False, reason, cmdline))

    def submit_command(self, command: str, a0: int = 0, a1: int = 0, a2: int = 0
                       ) -> Future[GuestResult]:
        """Queue a workload command for the guest; the future resolves when it is done."""
        if command not in COMMANDS:
            raise MachineError(f"unknown guest command '{command}'")
        if self.runstate in ("shutdown", "guest-panicked", "internal-error"):
            raise MachineError(f"guest is {self.runstate}")
        future: Future[GuestResult] = Future()
        with self._cond:
            seq = self._next_cmd_seq
            self._next_cmd_seq += 1
            mask = 0xFFFF_FFFF_FFFF_FFFF
            self._commands.append(
                _PendingCommand(seq, COMMANDS[command], (a0 & mask, a1 & mask, a2 & mask), future)
            )
            self._cond.notify_all()
        return future

    def guest_command(self, command: str, a0: int = 0, a1: int = 0, a2: int = 0,
                      timeout: float = 60.0) -> GuestResult:
        """Run a workload command inside the guest and wait for its result."""
        return self.submit_command(command, a0, a1, a2).result(timeout)

    def read_memory(self, gpa: int, size: int) -> bytes:
        """Guest-physical memory as the guest CPU would read it (zeros for unplugged blocks)."""
        return self._call(lambda: self.cpu_view.read(gpa, size))

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the vCPU thread with the machine quiescent (for snapshots, saves)."""
        return self._call(fn, timeout)

    @property
    def view_addr(self) -> int:
        return self._view_addr

    @property
    def uptime_ns(self) -> int:
        return time.monotonic_ns() - self._boot_ns

    def save(self, stream: BinaryIO) -> None:
        """Write the whole machine to ``stream`` (``migrate "exec:cat > FILE"``)."""
        from emulator.migration import save_machine

        save_machine(self, stream)

    def load_state(self, stream: BinaryIO) -> None:
        """Load a saved machine into this freshly built one (``-incoming``)."""
        from emulator.migration import load_machine

        load_machine(self, stream)

    def snapshot(self, *, residency: bool = False) -> Any:
        """The current state of everything a user can see (``emulator.snapshot``).

        Runs on the caller's thread and does not stop the guest: a room full of pages polling
        their machines must not slow the guests down.
        """
        from emulator.snapshot import take_snapshot

        if self._closed:
            raise MachineError("the machine is closed")
        return take_snapshot(self, residency=residency)

    def wait_until(self, predicate: Callable[[Machine], bool], timeout: float = 30.0,
                   poll: float = 0.005) -> bool:
        """Wait until ``predicate(machine)`` holds; re-checked on every event and every ``poll``."""
        deadline = time.monotonic() + timeout
        while True:
            seq = self.bus.last_seq
            if predicate(self):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.bus.wait(seq, min(left, poll * 20))


class _LazyDma:
    """Lets transports be built before the machine's ``DmaMemory`` exists."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine

    def read(self, gpa: int, size: int) -> bytes:
        return self._machine.dma.read(gpa, size)

    def write(self, gpa: int, data: bytes) -> None:
        self._machine.dma.write(gpa, data)
