"""Saving a whole machine to a stream and loading it into a fresh one ("migration").

Format (version 2)::

    MAGIC  <u32 version>
    section*: <u8 type> <u32 length> <payload: length bytes> <u32 CRC32 of type+length+payload>

Sections: one ``HEADER`` first (JSON: CPU registers, device and transport state, machine
state; see ``emulator.migration_header``), then ``RAM`` sections (``<u64 gpa><u32 pages>``
and the pages, at most :data:`MAX_RUN_PAGES` a section), then ``END``. Like QEMU's RAM
migration only memory worth sending is written: resident, non-zero pages of boot RAM and of
*plugged* device blocks. Unplugged memory never leaves the source and the destination
discards it (it starts out unpopulated anyway).

QEMU marks its sections with footers; vmemlab adds a CRC32 to each, because a stream can
be a browser upload: corruption is refused, not loaded silently. Loading checks everything
before it is used -- the header's every field (type, range, finiteness), each section's
length before reading it, that a RAM run is page-aligned, inside RAM and inside *plugged*
blocks -- and fails with :class:`MigrationError` (QEMU's text where QEMU has one).

The destination is built from its own configuration, as QEMU's is from its command line; the
stream must fit it, and mismatches fail with QEMU's messages. Device state (sizes, requested
size, bitmap) comes from the stream and overrides the destination's configuration.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from typing import TYPE_CHECKING, Any, BinaryIO

from device.errors import MigrationError
from emulator import abi, migration_header
from emulator.backing import HostMemory
from emulator.events import MigrationStatus
from emulator.states import RunState

if TYPE_CHECKING:
    from emulator.machine import Machine

MAGIC = b"VMEMLAB-MIGRATION\n"
VERSION = 2
VERSION_WORD = struct.Struct("<I")
SECTION = struct.Struct("<BI")  # type, payload length
CRC = struct.Struct("<I")
HEADER, RAM, END = 1, 2, 3
SECTION_NAMES = {HEADER: "header", RAM: "ram", END: "end"}
RUN = struct.Struct("<QI")  # a RAM section's payload starts with: gpa, pages
MAX_RUN_PAGES = 256  # 1 MiB of RAM a section: one bad byte costs at most that much
MAX_HEADER_BYTES = 4 << 20
_ZERO_PAGE = bytes(abi.PAGE_SIZE)
_RESIDENT_RUN = re.compile(b"\x01+")
_UNPLUGGED_RUN = re.compile(b"\x00+")



def _ramblocks(machine: Machine) -> dict[str, HostMemory]:
    """Every RAM block by its migration name: the board's (boot RAM, virtio-mem regions), then
    DIMMs (a DIMM's ramblock is its backend's id, as in QEMU: ``Unknown ramblock "d1"``)."""
    blocks = machine.board.ramblocks()
    blocks.update({mem.name: mem for mem in machine.hotplug.ramblocks()})
    return blocks


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


def _write_section(stream: BinaryIO, kind: int, *parts: bytes | memoryview) -> None:
    head = SECTION.pack(kind, sum(len(part) for part in parts))
    crc = zlib.crc32(head)
    stream.write(head)
    for part in parts:
        crc = zlib.crc32(part, crc)
        stream.write(part)
    stream.write(CRC.pack(crc))


def _write_pages(stream: BinaryIO, mem: HostMemory, runs: list[tuple[int, int]]) -> int:
    sent = 0
    for first, total in runs:
        for page in range(first, first + total, MAX_RUN_PAGES):
            count = min(MAX_RUN_PAGES, first + total - page)
            offset = page * abi.PAGE_SIZE
            _write_section(stream, RAM, RUN.pack(mem.gpa + offset, count),
                           mem.view[offset : offset + count * abi.PAGE_SIZE])
            sent += count * abi.PAGE_SIZE
    return sent


def _header(machine: Machine) -> dict[str, Any]:
    header = {
        "version": VERSION,
        "ramblocks": {name: m.size for name, m in _ramblocks(machine).items()},
        "cpu": machine.board.cpu_state(),
        "devices": machine.board.devices_state(),
        "machine": machine.state(),
        "memory_hotplug": machine.hotplug.state(),
    }
    balloon = machine.board.balloon_state()
    if balloon is not None:
        header["balloon"] = balloon
    return header


def save_machine(machine: Machine, stream: BinaryIO) -> int:
    """Write the machine to ``stream``; returns the bytes of RAM sent. Leaves it paused."""

    def work() -> int:
        machine.bus.publish(MigrationStatus("active"))
        for dev in machine.devices.values():
            dev.migration_running = True
        try:
            stream.write(MAGIC + VERSION_WORD.pack(VERSION))
            _write_section(stream, HEADER, json.dumps(_header(machine)).encode())
            sent = _write_pages(stream, machine.boot_ram,
                                _page_runs(machine.boot_ram, None, abi.PAGE_SIZE))
            for dev_id, dev in machine.devices.items():
                mem = machine.regions[dev_id]
                sent += _write_pages(stream, mem, _page_runs(mem, bytes(dev.bitmap),
                                                             dev.block_size))
            for mem in machine.hotplug.ramblocks():
                sent += _write_pages(stream, mem, _page_runs(mem, None, abi.PAGE_SIZE))
            _write_section(stream, END)
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


def _section(stream: BinaryIO, number: int) -> tuple[int, bytes]:
    """(type, payload) of the next section, its length and CRC checked; MigrationError."""
    head = _read_exact(stream, SECTION.size)
    kind, length = SECTION.unpack(head)
    if kind not in SECTION_NAMES:
        raise MigrationError(f"Unknown savevm section type {kind}")
    limit = {HEADER: MAX_HEADER_BYTES, RAM: RUN.size + MAX_RUN_PAGES * abi.PAGE_SIZE,
             END: 0}[kind]
    if length > limit:
        raise MigrationError(f"Migration stream section {number} ({SECTION_NAMES[kind]}) "
                             f"claims {length} bytes (at most {limit})")
    payload = _read_exact(stream, length)
    (want,) = CRC.unpack(_read_exact(stream, CRC.size))
    got = zlib.crc32(payload, zlib.crc32(head))
    if got != want:
        raise MigrationError(f"Migration stream section {number} ({SECTION_NAMES[kind]}) "
                             f"is corrupt: CRC32 0x{got:08x}, the stream says 0x{want:08x}")
    return kind, payload


def _check_version(stream: BinaryIO) -> None:
    if _read_exact(stream, len(MAGIC)) != MAGIC:
        raise MigrationError("Not a migration stream")
    (version,) = VERSION_WORD.unpack(_read_exact(stream, VERSION_WORD.size))
    if version == VERSION:
        return
    if stream.read(1) == b"{":  # format 1: MAGIC, header length, JSON, unchecked pages
        raise MigrationError("Unsupported migration stream version 1 (written by an older "
                             f"vmemlab, without checksums; this one reads version {VERSION})")
    raise MigrationError(f"Unsupported migration stream version {version} (this vmemlab "
                         f"reads version {VERSION})")


def _check_layout(machine: Machine, header: dict[str, Any]) -> None:
    """The stream must describe this destination: its RAM blocks and its devices."""
    blocks = _ramblocks(machine)
    for name, size in header["ramblocks"].items():
        if name not in blocks:
            raise MigrationError(f'Unknown ramblock "{name[:64]}", cannot accept migration')
        if blocks[name].size != size:
            raise MigrationError(
                f"Size mismatch: {name}: 0x{size:x} != 0x{blocks[name].size:x}: Invalid argument"
            )
    for dev_id in header["devices"]:
        if dev_id not in machine.devices:
            raise MigrationError(
                f"Unknown savevm section or instance '{dev_id[:64]}' 0. Make sure that your "
                "current VM setup matches your saved VM setup, including any hotplugged devices")
    for dev_id in machine.devices:
        if dev_id not in header["devices"]:
            raise MigrationError(f"Missing section for device '{dev_id}' in migration stream")
    balloon = machine.balloon
    ours = balloon.id if balloon is not None else None
    theirs = header["balloon"]["device"].get("id") if "balloon" in header else None
    if theirs is not None and theirs != ours:
        raise MigrationError(
            f"Unknown savevm section or instance '{str(theirs)[:64]}' 0. Make sure that your "
            "current VM setup matches your saved VM setup, including any hotplugged devices")
    if ours is not None and theirs is None:
        raise MigrationError(f"Missing section for device '{ours}' in migration stream")
    hotplug = header.get("memory_hotplug")
    if hotplug is not None and len(hotplug["acpi"]["devs"]) != machine.hotplug.slots:
        raise MigrationError(f"memory hotplug: the stream has {len(hotplug['acpi']['devs'])} "
                             f"DIMM slots, this machine {machine.hotplug.slots} (-m ...,slots=)")
    for dev_id in header["machine"]["guest_states"]:
        if dev_id not in machine.devices and dev_id != ours:
            raise MigrationError(f"Migration stream: guest state for unknown device "
                                 f"'{dev_id[:64]}'")


def _load_pages(machine: Machine, payload: bytes, regions: list[HostMemory]) -> None:
    gpa, count = RUN.unpack_from(payload)
    size = count * abi.PAGE_SIZE
    if count == 0 or len(payload) != RUN.size + size or gpa % abi.PAGE_SIZE:
        raise MigrationError(f"Migration stream page run {gpa:#x}+{size:#x} is malformed")
    mem = next((m for m in regions if m.contains(gpa, size)), None)
    if mem is None:
        raise MigrationError(f"Migration stream page run {gpa:#x}+{size:#x} outside RAM")
    for dev_id, region in machine.regions.items():
        if region is mem:
            dev = machine.devices[dev_id]
            first = (gpa - mem.gpa) // dev.block_size
            last = (gpa - mem.gpa + size - 1) // dev.block_size
            if 0 in dev.bitmap[first : last + 1]:
                raise MigrationError(f"Migration stream page run {gpa:#x}+{size:#x} writes "
                                     f"unplugged memory of '{dev_id}'")
    mem.write(gpa - mem.gpa, payload[RUN.size :])


def _load(machine: Machine, stream: BinaryIO) -> None:
    _check_version(stream)
    kind, payload = _section(stream, 1)
    if kind != HEADER:
        raise MigrationError("Migration stream: the first section is not the header")
    try:
        header = migration_header.decode(payload)
    except migration_header.HeaderError as err:
        raise MigrationError(f"Invalid migration header: {err}") from None
    if header["version"] != VERSION:
        raise MigrationError(f"Unsupported migration stream version {header['version']}")
    _check_layout(machine, header)
    for i, (dev_id, dev) in enumerate(machine.devices.items()):
        state = header["devices"][dev_id]
        dev.load(state["device"])
        machine.transports[i].load(state["transport"])
    if "balloon" in header:
        machine.board.restore_balloon(header["balloon"])
    regions = machine.board.ram()
    number = 1
    while True:
        number += 1
        kind, payload = _section(stream, number)
        if kind == END:
            break
        if kind != RAM:
            raise MigrationError(f"Migration stream section {number}: a second header")
        _load_pages(machine, payload, regions)
    machine.board.restore_cpu(header["cpu"])
    machine.restore(header["machine"])
    if "memory_hotplug" in header:
        machine.hotplug.restore(header["memory_hotplug"])


