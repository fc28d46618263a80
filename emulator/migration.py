"""Saving a whole machine to a stream and loading it into a fresh one ("migration").

Format: ``MAGIC``, a little-endian u32 length, a JSON header (CPU registers, device and
transport state, machine state), then page runs ``<u64 gpa><u32 pages><data>`` ended by a run
with gpa ``END``. Like QEMU's RAM migration only memory worth sending is written: resident,
non-zero pages of boot RAM and of *plugged* device blocks. Unplugged memory never leaves the
source and the destination discards it (it starts out unpopulated anyway).

The destination is built from its own configuration, as QEMU's is from its command line; the
stream must fit it, and mismatches fail with QEMU's messages. Device state (sizes, requested
size, bitmap) comes from the stream and overrides the destination's configuration.
"""

from __future__ import annotations

import json
import re
import struct
from typing import TYPE_CHECKING, Any, BinaryIO

from device.errors import MigrationError
from emulator import abi
from emulator.backing import HostMemory
from emulator.events import MigrationStatus
from emulator.states import RunState

if TYPE_CHECKING:
    from emulator.machine import Machine

MAGIC = b"VMEMLAB-MIGRATION\n"
VERSION = 1
END = 0xFFFF_FFFF_FFFF_FFFF
RUN = struct.Struct("<QI")
BOOT_RAMBLOCK = "mach-virt.ram"
_ZERO_PAGE = bytes(abi.PAGE_SIZE)
_RESIDENT_RUN = re.compile(b"\x01+")
_UNPLUGGED_RUN = re.compile(b"\x00+")



def _ramblock(mem: HostMemory) -> str:
    return BOOT_RAMBLOCK if mem.name == "ram" else f"vmemlab/{mem.name}"


def _page_runs(mem: HostMemory, plugged: bytes | None, block_size: int
               ) -> list[tuple[int, int]]:
    """(page index, page count) runs worth sending: resident, plugged, not all zero."""
    vec = mem.resident_pages()
    if plugged is not None:
        per_block = block_size // abi.PAGE_SIZE
        for hole in _UNPLUGGED_RUN.finditer(plugged):
            first, last = hole.start() * per_block, hole.end() * per_block
            vec[first:last] = bytes(last - first)
    runs: list[tuple[int, int]] = []
    for match in _RESIDENT_RUN.finditer(vec):
        start = None
        for page in range(match.start(), match.end()):
            offset = page * abi.PAGE_SIZE
            zero = mem.view[offset : offset + abi.PAGE_SIZE] == _ZERO_PAGE
            if zero and start is not None:
                runs.append((start, page - start))
                start = None
            elif not zero and start is None:
                start = page
        if start is not None:
            runs.append((start, match.end() - start))
    return runs


def _write_pages(stream: BinaryIO, mem: HostMemory, runs: list[tuple[int, int]]) -> int:
    sent = 0
    for page, count in runs:
        offset = page * abi.PAGE_SIZE
        stream.write(RUN.pack(mem.gpa + offset, count))
        stream.write(mem.view[offset : offset + count * abi.PAGE_SIZE])
        sent += count * abi.PAGE_SIZE
    return sent


def _header(machine: Machine) -> dict[str, Any]:
    return {
        "version": VERSION,
        "ramblocks": {_ramblock(m): m.size for m in machine.board.ram()},
        "cpu": machine.board.cpu_state(),
        "devices": machine.board.devices_state(),
        "machine": machine.state(),
    }


def save_machine(machine: Machine, stream: BinaryIO) -> int:
    """Write the machine to ``stream``; returns the bytes of RAM sent. Leaves it paused."""

    def work() -> int:
        machine.bus.publish(MigrationStatus("active"))
        for dev in machine.devices.values():
            dev.migration_running = True
        try:
            header = json.dumps(_header(machine)).encode()
            stream.write(MAGIC + struct.pack("<I", len(header)) + header)
            sent = _write_pages(stream, machine.boot_ram,
                                _page_runs(machine.boot_ram, None, abi.PAGE_SIZE))
            for dev_id, dev in machine.devices.items():
                mem = machine.regions[dev_id]
                sent += _write_pages(stream, mem, _page_runs(mem, bytes(dev.bitmap),
                                                             dev.block_size))
            stream.write(RUN.pack(END, 0))
            stream.flush()
        except Exception as exc:
            machine.bus.publish(MigrationStatus("failed", str(exc)))
            raise
        finally:
            for dev in machine.devices.values():
                dev.migration_running = False
        machine.last_migration_bytes = sent
        machine.bus.publish(MigrationStatus("completed", f"{sent} bytes of RAM"))
        machine.set_runstate(RunState.POSTMIGRATE, "migration completed")
        return sent

    def locked() -> int:
        with machine.device_lock:
            return work()

    return machine.call(locked, timeout=600)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise MigrationError("Unable to read from the migration stream: unexpected end of file")
    return data


def load_machine(machine: Machine, stream: BinaryIO) -> None:
    """Load ``stream`` into ``machine`` (built with ``incoming=True``), then let it run."""

    def work() -> None:
        try:
            _load(machine, stream)
        except Exception as exc:
            machine.bus.publish(MigrationStatus("failed", str(exc)))
            raise
        machine.bus.publish(MigrationStatus("completed", "incoming"))
        machine.set_runstate(RunState.RUNNING, "migration completed")

    def locked() -> None:
        with machine.device_lock:
            work()

    machine.call(locked, timeout=600)


def _load(machine: Machine, stream: BinaryIO) -> None:
    if _read_exact(stream, len(MAGIC)) != MAGIC:
        raise MigrationError("Not a vmemlab migration stream (bad magic)")
    (length,) = struct.unpack("<I", _read_exact(stream, 4))
    try:
        header = json.loads(_read_exact(stream, length))
    except ValueError as exc:
        raise MigrationError(f"Corrupt migration header: {exc}") from None
    if header.get("version") != VERSION:
        raise MigrationError(f"Unsupported migration stream version {header.get('version')}")
    blocks = {_ramblock(m): m for m in machine.board.ram()}
    for name, size in header["ramblocks"].items():
        if name not in blocks:
            raise MigrationError(f'Unknown ramblock "{name}", cannot accept migration')
        if blocks[name].size != size:
            raise MigrationError(
                f"Size mismatch: {name}: 0x{size:x} != 0x{blocks[name].size:x}: Invalid argument"
            )
    for i, (dev_id, dev) in enumerate(machine.devices.items()):
        state = header["devices"].get(dev_id)
        if state is None:
            raise MigrationError(f"Missing section for device '{dev_id}' in migration stream")
        dev.load(state["device"])
        machine.transports[i].load(state["transport"])
    regions = machine.board.ram()
    while True:
        gpa, count = RUN.unpack(_read_exact(stream, RUN.size))
        if gpa == END:
            break
        size = count * abi.PAGE_SIZE
        mem = next((m for m in regions if m.contains(gpa, size)), None)
        if mem is None:
            raise MigrationError(f"Migration stream page run {gpa:#x}+{size:#x} outside RAM")
        mem.write(gpa - mem.gpa, _read_exact(stream, size))
    machine.board.restore_cpu({k: int(v) for k, v in header["cpu"].items()})
    machine.restore(header["machine"])


