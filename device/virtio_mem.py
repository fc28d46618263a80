"""The virtio-mem device model (virtio 1.2 §5.15), behaving like QEMU's ``virtio-mem``.

Pure Python, no emulator imports: the machine gives it a :class:`MemoryBackend` (host memory),
an ``emit`` callback (events) and a ``notify_config`` callback (config-change interrupt).
Block state is a ``bytearray`` with one byte (0/1) per device block, so range checks and
updates are single C-level slice/find/count operations, never Python loops over blocks.

Check order of PLUG/UNPLUG is QEMU's ``virtio_mem_state_change_request``: invalid range ->
ERROR; plug beyond requested_size -> NACK; blocks not all in the opposite state -> ERROR;
``virtio_mem_is_busy()`` (migration) -> BUSY (QEMU checks it inside
``virtio_mem_set_block_state``, i.e. after the three checks above); backend failure -> BUSY.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from device import virtio_mem_protocol as p
from device.errors import BackendError, ConfigError, MigrationError, ProtocolViolation
from device.events import (
    BlockStateChange,
    ConfigChange,
    DeviceReset,
    Event,
    VirtioRequest,
    VirtioResponse,
)
from device.memslots import Memslots
from device.virtio_mem_requests import GuestRequests
from device.virtio_mem_types import check_memory_type, extension_features

MiB = 1 << 20
GiB = 1 << 30
U64_MAX = (1 << 64) - 1
MIN_BLOCK_SIZE = 1 * MiB  # VIRTIO_MEM_MIN_BLOCK_SIZE
STATE_FORMAT = "vmemlab-virtio-mem/1"

_TO_ASCII = bytes.maketrans(b"\x00\x01", b"01")
_FROM_ASCII = bytes.maketrans(b"01", b"\x00\x01")


class MemoryBackend(Protocol):
    """Host side of the device memory (the emulator implements it).

    Offsets are relative to the region start; sizes are multiples of the block size. Either
    call may raise :class:`BackendError`, which the device answers with BUSY (QEMU: prealloc
    or ``ram_block_discard_range`` failure).
    """

    def plug(self, offset: int, size: int) -> None:
        """Make the range usable (populate/preallocate if the host wants to)."""

    def unplug(self, offset: int, size: int) -> None:
        """Discard the range (``madvise(MADV_DONTNEED)``); it must read as zeros afterwards."""


@dataclass
class VirtioMemOptions:
    """Device knobs that differ between QEMU versions/targets, plus the RFC option."""

    unplugged_inaccessible: bool = False
    """Offer VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE (always on arm; x86 7.2: 'auto' -> off for
    memory-backend-ram). It forbids the *driver* to read unplugged memory; the device
    enforces nothing (without dynamic memslots the whole region stays mapped)."""
    acpi_pxm: bool = True
    """Offer VIRTIO_MEM_F_ACPI_PXM (QEMU offers it with NUMA + ACPI)."""
    persistent_suspend: bool = False
    """Offer VIRTIO_MEM_F_PERSISTENT_SUSPEND (bit 2, virtio 1.4 drafts only)."""
    usable_extent: int = 256 * MiB
    """VIRTIO_MEM_USABLE_EXTENT: 2*128 MiB on x86/s390x; 2*512 MiB on ARM."""
    rfc_shrink_on_reboot: bool = False
    """The 2017 RFC's reboot behaviour instead of unplug-all (see ``system_reset``)."""
    dynamic_memslots: bool = False
    """QEMU 8.2's ``dynamic-memslots=on``: the region is split into ``nb_memslots`` memslots
    of ``memslot_size`` (the last may be smaller), each mapped only while a block in it is
    plugged (``virtio_mem_activate_memslot``/``virtio_mem_deactivate_memslot``)."""
    nb_memslots: int = 1
    memslot_size: int = 0
    """0: one memslot spanning the region."""
    rfc_write_protect: bool = False
    """``x-rfc-write-protect=on``: the 2017 RFC's design -- unplugged memory is write-protected
    by the host, a guest write is refused. (Shipped QEMU protects nothing.)"""
    guest_requests: bool = False
    """``x-guest-requests=on``: vmemlab's experiment of the RFC addendum's guest -> host
    queue (``device.virtio_mem_requests``; in no virtio specification)."""
    backend_page_size: int = 4096
    """The memory backend's page size (a hugetlb backend's huge page size)."""
    memory_type: str = ""
    """``x-memory-type=ram|ram-huge``: the RFC addendum's memory type, in an extension of
    the config space (``device.virtio_mem_types``; in no virtio specification). "": none."""


def _hex(value: int) -> str:
    return f"0x{value:x}"


class VirtioMemDevice:
    """One virtio-mem device: config space, request handling, usable region, resets, state."""

    def __init__(
        self,
        dev_id: str,
        *,
        addr: int,
        region_size: int,
        block_size: int,
        node_id: int = 0,
        requested_size: int = 0,
        options: VirtioMemOptions | None = None,
        backend: MemoryBackend,
        emit: Callable[[Event], None],
        notify_config: Callable[[], None] | None = None,
    ) -> None:
        self.options = options if options is not None else VirtioMemOptions()
        _validate_realize(addr, region_size, block_size, node_id, requested_size, self.options)
        self._id = dev_id
        self._addr = addr
        self._region_size = region_size
        self._block_size = block_size
        self._node_id = node_id
        self._requested_size = requested_size
        self._backend = backend
        self._emit = emit
        self.notify_config: Callable[[], None] = notify_config or _no_notify
        """Config-change interrupt; a transport rebinds it to itself when attached."""
        self.nb_blocks = region_size // block_size
        self._bitmap = bytearray(self.nb_blocks)
        if self.options.dynamic_memslots and not self.options.unplugged_inaccessible:
            raise ConfigError("'dynamic-memslots' property set to 'on' requires "
                              "'unplugged-inaccessible' to be 'on'")
        self._memslots = Memslots(region_size, block_size,
                                  dynamic=self.options.dynamic_memslots,
                                  count=self.options.nb_memslots, size=self.options.memslot_size)
        self._plugged_blocks = 0
        self._usable_region_size = 0
        self._resize_usable_region(requested_size, can_shrink=True)
        self.driver_features = 0
        self.migration_running = False
        self.broken = False
        self.broken_reason: str | None = None
        self.config_generation = 0
        """Bumped on every config-space change so 64-bit reads can be made consistent."""
        # the experimental x-host-request queue's host side (the transport serves it)
        self.requests = GuestRequests(self, emit) if self.options.guest_requests else None

    # ----------------------------------------------------------------------- properties
    @property
    def id(self) -> str:
        return self._id

    @property
    def addr(self) -> int:
        return self._addr

    @property
    def region_size(self) -> int:
        return self._region_size

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def node_id(self) -> int:
        return self._node_id

    @property
    def requested_size(self) -> int:
        return self._requested_size

    @property
    def plugged_size(self) -> int:
        return self._plugged_blocks * self._block_size

    @property
    def usable_region_size(self) -> int:
        return self._usable_region_size

    @property
    def bitmap(self) -> bytearray:
        """One byte per block, 1 = plugged. Read-only for callers: do not mutate."""
        return self._bitmap

    def bitmap_bytes(self) -> bytes:
        """Immutable copy of the block states (one byte per block)."""
        return bytes(self._bitmap)

    @property
    def memslots(self) -> bytearray:
        """One byte per memslot, 1 = mapped. Read-only for callers: do not mutate."""
        return self._memslots.mapped

    @property
    def memslot_size(self) -> int:
        """Bytes per memslot (the last may be smaller); the region without dynamic memslots."""
        return self._memslots.size

    def memslot_mapped(self, block: int) -> bool:
        """Whether the memslot holding ``block`` is mapped (always, without dynamic memslots)."""
        return self._memslots.is_mapped(block)

    @property
    def device_features(self) -> int:
        """64-bit feature bits offered: VERSION_1 plus the enabled VIRTIO_MEM_F_* bits."""
        features = 1 << p.VIRTIO_F_VERSION_1
        if self.options.acpi_pxm:
            features |= 1 << p.VIRTIO_MEM_F_ACPI_PXM
        if self.options.unplugged_inaccessible:
            features |= 1 << p.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE
        if self.options.persistent_suspend:
            features |= 1 << p.VIRTIO_MEM_F_PERSISTENT_SUSPEND
        features |= extension_features(self)  # vmemlab's experiments (docs/extensions.md)
        return features

    @property
    def unplugged_inaccessible_negotiated(self) -> bool:
        return bool(self.driver_features >> p.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE & 1)

    def is_plugged(self, block: int) -> bool:
        return self._bitmap[block] == 1

    def block_index(self, gpa: int) -> int:
        """Block number of a guest-physical address inside the region."""
        if not self._addr <= gpa < self._addr + self._region_size:
            raise ValueError(f"address {_hex(gpa)} is outside device {self._id}")
        return (gpa - self._addr) // self._block_size

    def plugged_runs(self) -> list[tuple[int, int]]:
        """(first_block, count) of every maximal run of plugged blocks, in address order."""
        return list(_runs(self._bitmap, 1))

    # ----------------------------------------------------------------------- features
    def features_ok(self, driver_features: int) -> bool:
        """Whether the device accepts FEATURES_OK with these driver features.

        QEMU ``virtio_mem_validate_features``: an offered UNPLUGGED_INACCESSIBLE that the
        driver did not accept is refused. Also refused (spec "MAY fail"): bits not offered,
        and a driver without VIRTIO_F_VERSION_1 (vmemlab has no legacy interface).
        """
        offered = self.device_features
        if driver_features & ~offered:
            return False
        if not driver_features >> p.VIRTIO_F_VERSION_1 & 1:
            return False
        ui = 1 << p.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE
        return not (offered & ui and not driver_features & ui)

    # ----------------------------------------------------------------------- config
    def config_fields(self) -> dict[str, int]:
        """Current config space as field name -> value."""
        return {
            "block_size": self._block_size,
            "node_id": self._node_id,
            "addr": self._addr,
            "region_size": self._region_size,
            "usable_region_size": self._usable_region_size,
            "plugged_size": self.plugged_size,
            "requested_size": self._requested_size,
        }

    def config_bytes(self) -> bytes:
        """The 56-byte little-endian ``struct virtio_mem_config``."""
        return p.pack_config(**self.config_fields())

    def read_config(self, offset: int, size: int) -> int:
        """Little-endian value of config[offset:offset+size]; 0 if not fully inside."""
        if offset < 0 or size <= 0 or offset + size > p.CONFIG_SIZE:
            return 0
        return int.from_bytes(self.config_bytes()[offset : offset + size], "little")

    def set_requested_size(self, size: int) -> None:
        """Runtime ``qom-set <id> requested-size``: same checks and texts as QEMU.

        Grows (never shrinks) the usable region and always sends a config notification,
        even if nothing changed, as QEMU does ("especially helpful for debugging").
        """
        if not isinstance(size, int) or size < 0 or size > U64_MAX:
            raise ConfigError("Parameter 'requested-size' expects size")
        if size % self._block_size:
            raise ConfigError(
                f"'requested-size' has to be multiples of 'block-size' ({_hex(self._block_size)})"
            )
        if size > self._region_size:
            raise ConfigError(
                f"'requested-size' cannot exceed the memory backend size({_hex(self._region_size)})"
            )
        changed: dict[str, int] = {}
        # QEMU resizes only if the value changed; resizing always is equivalent for the
        # shipped design (usable >= the grow target already) and lets an RFC-mode area that
        # shrank on reboot grow again when the host re-sends the same size.
        if self._resize_usable_region(size, can_shrink=False):
            changed["usable_region_size"] = self._usable_region_size
        if size != self._requested_size:
            self._requested_size = size
            changed["requested_size"] = size
        self._config_changed(changed, notify=True)

    def _resize_usable_region(self, requested: int, *, can_shrink: bool) -> bool:
        """QEMU ``virtio_mem_resize_usable_region``; returns whether the size changed."""
        bs = self._block_size
        newsize = min(self._region_size, requested + self.options.usable_extent)
        newsize = (newsize + bs - 1) // bs * bs
        if not requested:
            newsize = 0
        if newsize < self._usable_region_size and not can_shrink:
            return False
        changed = newsize != self._usable_region_size
        self._usable_region_size = newsize
        return changed

    def _config_changed(self, fields: dict[str, int], *, notify: bool) -> None:
        if fields:
            self.config_generation += 1
        if notify:
            self.notify_config()
        if fields or notify:
            self._emit(ConfigChange(self._id, fields, notify))

    # ----------------------------------------------------------------------- requests
    def handle_request(self, request: bytes, response_space: int | None = None) -> bytes:
        """Handle one guest request; returns the 10-byte response.

        Raises :class:`ProtocolViolation` (QEMU ``virtio_error`` text) for a request shorter
        than 24 bytes, a response buffer (``response_space``, if given) shorter than 10 bytes,
        or an unknown type -- in QEMU's order. Bytes after the first 24 and all padding are
        ignored.
        """
        if len(request) < p.REQUEST_SIZE:
            # QEMU prints sizeof(struct virtio_mem_req), not the received length.
            raise ProtocolViolation(
                f"virtio-mem protocol violation: invalid request size: {p.REQUEST_SIZE}"
            )
        if response_space is not None and response_space < p.RESPONSE_SIZE:
            raise ProtocolViolation(
                f"virtio-mem protocol violation: not enough space for response: {response_space}"
            )
        req = p.unpack_request(request)
        name = p.request_name(req.type)
        if req.type == p.VIRTIO_MEM_REQ_UNPLUG_ALL:
            self._emit(VirtioRequest(self._id, name, 0, 0))
        else:
            self._emit(VirtioRequest(self._id, name, req.addr, req.nb_blocks))
        state: int | None = None
        if req.type == p.VIRTIO_MEM_REQ_PLUG:
            resp = self._state_change(req.addr, req.nb_blocks, plug=True)
        elif req.type == p.VIRTIO_MEM_REQ_UNPLUG:
            resp = self._state_change(req.addr, req.nb_blocks, plug=False)
        elif req.type == p.VIRTIO_MEM_REQ_UNPLUG_ALL:
            resp = p.VIRTIO_MEM_RESP_ACK if self._unplug_all() else p.VIRTIO_MEM_RESP_BUSY
        elif req.type == p.VIRTIO_MEM_REQ_STATE:
            resp, state = self._state_request(req.addr, req.nb_blocks)
        else:
            raise ProtocolViolation(
                f"virtio-mem protocol violation: unknown request type: {req.type}"
            )
        self._emit(
            VirtioResponse(
                self._id,
                name,
                p.RESPONSE_NAMES[resp],
                None if state is None else p.STATE_NAMES[state],
            )
        )
        return p.pack_response(resp, state or 0)

    def _valid_range(self, gpa: int, size: int) -> bool:
        """QEMU ``virtio_mem_valid_range``: aligned, non-empty, no overflow, inside usable."""
        if gpa % self._block_size:
            return False
        if size == 0 or gpa + size > U64_MAX:
            return False
        end = self._addr + self._usable_region_size
        if gpa < self._addr or gpa >= end:
            return False
        return gpa + size <= end

    def _state_change(self, gpa: int, nb_blocks: int, *, plug: bool) -> int:
        size = nb_blocks * self._block_size
        if not self._valid_range(gpa, size):
            return p.VIRTIO_MEM_RESP_ERROR
        if plug and self.plugged_size + size > self._requested_size:
            return p.VIRTIO_MEM_RESP_NACK
        first = (gpa - self._addr) // self._block_size
        end = first + nb_blocks
        # all blocks must be in the opposite state: no byte equal to the target state
        if self._bitmap.find(1 if plug else 0, first, end) != -1:
            return p.VIRTIO_MEM_RESP_ERROR
        if self.migration_running:
            return p.VIRTIO_MEM_RESP_BUSY
        offset = first * self._block_size
        try:
            if plug:
                self._backend.plug(offset, size)
            else:
                self._backend.unplug(offset, size)
        except BackendError:
            return p.VIRTIO_MEM_RESP_BUSY
        self._set_range(first, end, plug)
        self._config_changed({"plugged_size": self.plugged_size}, notify=False)
        return p.VIRTIO_MEM_RESP_ACK

    def _state_request(self, gpa: int, nb_blocks: int) -> tuple[int, int | None]:
        if not self._valid_range(gpa, nb_blocks * self._block_size):
            return p.VIRTIO_MEM_RESP_ERROR, None
        first = (gpa - self._addr) // self._block_size
        end = first + nb_blocks
        if self._bitmap.find(0, first, end) == -1:
            return p.VIRTIO_MEM_RESP_ACK, p.VIRTIO_MEM_STATE_PLUGGED
        if self._bitmap.find(1, first, end) == -1:
            return p.VIRTIO_MEM_RESP_ACK, p.VIRTIO_MEM_STATE_UNPLUGGED
        return p.VIRTIO_MEM_RESP_ACK, p.VIRTIO_MEM_STATE_MIXED

    def _set_range(self, first: int, end: int, plug: bool) -> None:
        count = end - first
        if plug:
            self._memslots.activate(first, end)
        self._bitmap[first:end] = (b"\x01" if plug else b"\x00") * count
        self._plugged_blocks += count if plug else -count
        if not plug:
            self._memslots.deactivate_unplugged(self._bitmap, first, end)
        self._emit(BlockStateChange(self._id, first, count, plug))

    def _unplug_all(self) -> bool:
        """QEMU ``virtio_mem_unplug_all``; False means BUSY.

        Like QEMU, busy/discard failure only matter when something is plugged: then the
        *whole* region is discarded in one go (``ram_block_discard_range(rb, 0,
        qemu_ram_get_used_length(rb))``: also any page a rogue guest wrote into unplugged
        memory), every plugged run becomes unplugged and the usable region is recomputed with
        shrinking allowed. A failed discard changes nothing and is BUSY, so the driver
        retries as the spec asks.
        """
        changed: dict[str, int] = {}
        if self._plugged_blocks:
            if self.migration_running:
                return False
            try:
                self._backend.unplug(0, self._region_size)
            except BackendError:
                return False
            for first, count in list(_runs(self._bitmap, 1)):
                self._set_range(first, first + count, False)
            changed["plugged_size"] = self.plugged_size
        if self._resize_usable_region(self._requested_size, can_shrink=True):
            changed["usable_region_size"] = self._usable_region_size
        self._config_changed(changed, notify=False)
        return True

    def _unplug_runs(self, start: int, stop: int) -> bool:
        """Unplug every plugged run within [start, stop); False on a backend failure."""
        bs = self._block_size
        for first, count in list(_runs(self._bitmap, 1, start, stop)):
            try:
                self._backend.unplug(first * bs, count * bs)
            except BackendError:
                return False
            self._set_range(first, first + count, False)
        return True

    def _plug_runs(self, start: int, stop: int) -> bool:
        """Plug every unplugged run within [start, stop); False on a backend failure."""
        bs = self._block_size
        for first, count in list(_runs(self._bitmap, 0, start, stop)):
            try:
                self._backend.plug(first * bs, count * bs)
            except BackendError:
                return False
            self._set_range(first, first + count, True)
        return True

    # ----------------------------------------------------------------------- resets
    def mark_broken(self, reason: str) -> None:
        """Record a ``virtio_error``; the transport sets NEEDS_RESET and emits DeviceBroken."""
        self.broken = True
        self.broken_reason = reason

    def device_reset(self) -> None:
        """Virtio (driver-initiated) reset: block state MUST NOT change (spec, QEMU)."""
        self.driver_features = 0
        self.broken = False
        self.broken_reason = None
        self._emit(DeviceReset(self._id, "device"))

    def system_reset(self) -> None:
        """Machine reset: unplug everything (spec SHOULD, QEMU) or the RFC's compaction.

        Default (QEMU ``virtio_mem_system_reset``): unplug all and shrink the usable region;
        while a migration runs this fails and memory stays plugged, as in QEMU, so the next
        driver has to UNPLUG_ALL itself.

        With ``rfc_shrink_on_reboot`` (the 2017 RFC): the memory area "might shrink on a
        reboot (to compensate 'unplugged' memory)" -- "On a reboot, we want to avoid any
        memory holes in our memory, therefore we resize our memory area (shrink it) to
        compensate memory that has been unplugged." Modelled as: the P plugged blocks are
        compacted to blocks [0, P) (blocks already there stay, the rest are discarded and the
        holes below P plugged; contents of moved blocks are not preserved) and the usable
        region shrinks to exactly P blocks, so the rebooted guest sees only plugged memory
        and no holes. requested_size is unchanged; the area grows again with the next
        ``set_requested_size`` ("we first 'replug' ... before we grow our memory area"). So
        in this mode usable_region_size may be below requested_size after a reboot -- a
        deliberate departure from the shipped spec.
        """
        self.driver_features = 0
        self.broken = False
        self.broken_reason = None
        self._emit(DeviceReset(self._id, "system"))
        if self.options.rfc_shrink_on_reboot:
            self._rfc_compact()
        else:
            self._unplug_all()

    def _rfc_compact(self) -> None:
        if not self._plugged_blocks:
            self._unplug_all()
            return
        if self.migration_running:
            return
        keep = self._plugged_blocks
        ok = self._unplug_runs(keep, self.nb_blocks) and self._plug_runs(0, keep)
        changed: dict[str, int] = {}
        if ok and self._usable_region_size != keep * self._block_size:
            self._usable_region_size = keep * self._block_size
            changed["usable_region_size"] = self._usable_region_size
        self._config_changed(changed, notify=False)

    # ----------------------------------------------------------------------- migration
    def save(self) -> dict[str, Any]:
        """Full device state, JSON-serialisable (bitmap packed 1 bit/block, base64)."""
        return {
            "format": STATE_FORMAT,
            "id": self._id,
            "addr": self._addr,
            "region_size": self._region_size,
            "block_size": self._block_size,
            "node_id": self._node_id,
            "requested_size": self._requested_size,
            "usable_region_size": self._usable_region_size,
            "plugged_size": self.plugged_size,
            "driver_features": self.driver_features,
            "bitmap": base64.b64encode(_pack_bits(self._bitmap)).decode("ascii"),
            "broken": self.broken,
            "broken_reason": self.broken_reason,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`save` result; QEMU's sanity checks and texts first.

        The stream's requested_size/usable_region_size override this device's (as in QEMU).
        The backend is not called: the machine restores guest RAM itself. All-or-nothing.
        """
        try:
            self._load(state)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise MigrationError(f"virtio-mem '{self._id}': invalid state: {exc!r}") from exc

    def _load(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise MigrationError(f"virtio-mem '{self._id}': unknown state format")
        addr, region = _int(state, "addr"), _int(state, "region_size")
        block, node = _int(state, "block_size"), _int(state, "node_id")
        if addr != self._addr:
            raise MigrationError(
                f"Property 'memaddr' changed from {_hex(addr)} to {_hex(self._addr)}"
            )
        if region != self._region_size:
            raise MigrationError(
                f"Property 'memdev' size changed from {_hex(region)} to {_hex(self._region_size)}"
            )
        if block != self._block_size:
            raise MigrationError(
                f"Property 'block-size' changed from {_hex(block)} to {_hex(self._block_size)}"
            )
        if node != self._node_id:
            raise MigrationError(f"Property 'node' changed from {node} to {self._node_id}")
        requested, usable = _int(state, "requested_size"), _int(state, "usable_region_size")
        plugged, features = _int(state, "plugged_size"), _int(state, "driver_features")
        bitmap = _unpack_bits(base64.b64decode(state["bitmap"], validate=True), self.nb_blocks)
        blocks = bitmap.count(1)
        if (
            requested % block
            or usable % block
            or not 0 <= usable <= region
            or plugged != blocks * block
            or not 0 <= features <= U64_MAX
        ):
            raise ValueError("inconsistent sizes")
        broken, reason = state["broken"], state["broken_reason"]
        if not isinstance(broken, bool) or not (reason is None or isinstance(reason, str)):
            raise TypeError("broken/broken_reason")
        self._requested_size, self._usable_region_size = requested, usable
        self._bitmap[:] = bitmap
        self._plugged_blocks = blocks
        self._memslots.sync(self._bitmap)
        self.driver_features = features
        self.broken, self.broken_reason = broken, reason
        self.config_generation += 1


def _no_notify() -> None:
    """Default config notifier until a transport attaches itself."""


def _validate_realize(addr: int, region_size: int, block_size: int, node_id: int,
                      requested_size: int, options: VirtioMemOptions) -> None:
    """QEMU's block-size setter and realize checks, in QEMU's order and wording."""
    if region_size <= 0:
        raise ConfigError("can't create backend with size 0")
    if block_size < MIN_BLOCK_SIZE:
        raise ConfigError(f"'block-size' property has to be at least {_hex(MIN_BLOCK_SIZE)}")
    if block_size & (block_size - 1):
        raise ConfigError("'block-size' property has to be a power of two")
    if not 0 <= node_id <= 0xFFFF:
        raise ConfigError(f"'node' property has value '{node_id}', which is not a valid node")
    if requested_size < 0 or requested_size % block_size:
        raise ConfigError(
            f"'requested-size' property has to be multiples of 'block-size' ({_hex(block_size)})"
        )
    if options.memory_type:
        check_memory_type(options.memory_type)
    if block_size < options.backend_page_size:  # a hugetlb backend's huge page size
        raise ConfigError("'block-size' property has to be at least the page size "
                          f"({_hex(options.backend_page_size)})")
    if addr < 0 or addr % block_size:
        raise ConfigError(
            f"'memaddr' property has to be multiples of 'block-size' ({_hex(block_size)})"
        )
    if region_size % block_size:
        raise ConfigError(
            f"'memdev' property memdev size has to be multiples of'block-size' ({_hex(block_size)})"
        )
    if addr + region_size > U64_MAX + 1:
        raise ConfigError(f"'memaddr' {_hex(addr)} + size exceeds the address space")


def _runs(
    bitmap: bytearray, value: int, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, int]]:
    """Maximal runs (first, count) of ``value`` within [start, stop), found with C find()."""
    stop = len(bitmap) if stop is None else stop
    other = 1 - value
    pos = start
    while pos < stop:
        first = bitmap.find(value, pos, stop)
        if first == -1:
            return
        end = bitmap.find(other, first, stop)
        if end == -1:
            end = stop
        yield first, end - first
        pos = end


def _pack_bits(bitmap: bytearray) -> bytes:
    """One byte per block -> one bit per block (bit i = block i, little-endian)."""
    if not bitmap:
        return b""
    value = int(bitmap.translate(_TO_ASCII)[::-1], 2)
    return value.to_bytes((len(bitmap) + 7) // 8, "little")


def _unpack_bits(data: bytes, nb_blocks: int) -> bytearray:
    """Inverse of :func:`_pack_bits`; ValueError if the length does not match."""
    if len(data) != (nb_blocks + 7) // 8:
        raise ValueError(f"bitmap has {len(data)} bytes for {nb_blocks} blocks")
    value = int.from_bytes(data, "little")
    if value >> nb_blocks:
        raise ValueError("bitmap has bits beyond the region")
    if not nb_blocks:
        return bytearray()
    return bytearray(format(value, f"0{nb_blocks}b").encode("ascii")[::-1].translate(_FROM_ASCII))


def _int(state: dict[str, Any], key: str) -> int:
    value = state[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"{key} must be a non-negative int")
    return value
