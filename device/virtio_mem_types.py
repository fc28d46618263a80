"""vmemlab's experiment of the 2017 RFC addendum's memory types (NOT in any virtio spec).

"Add a type to each virtio-mem device ... Initially, we could have RAM and RAM_HUGE. The
latter one would be interesting, because the guest would know that this memory is based on
huge pages ... (the guest could conclude that this memory might be faster and would also
best be used with huge pages in the guest)." Shipped virtio-mem has no type: its config space
ends at ``requested_size`` (56 bytes, virtio 1.2 §5.15.4).

With ``x-memory-type=ram|ram-huge`` the device offers feature bit
:data:`VIRTIO_MEM_F_X_MEMORY_TYPE` (61, chosen by vmemlab) and its config space grows by an
extension a driver may read only once it sees the bit::

    offset 56  le16 memory_type;   /* 0 RAM, 1 RAM_HUGE */
    offset 58  le8  padding[6];    /* config space: 64 bytes */
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from device import virtio_mem_protocol as p
from device.errors import ConfigError

if TYPE_CHECKING:
    from device.virtio_mem import VirtioMemDevice

VIRTIO_MEM_F_X_MEMORY_TYPE = 61  # vmemlab's experimental bit: in no virtio specification
VIRTIO_MEM_F_X_GUEST_REQUESTS = 62  # (device.virtio_mem_requests)
MEMORY_TYPES = {"ram": 0, "ram-huge": 1}
TYPE_NAMES = {0: "RAM", 1: "RAM_HUGE"}
EXT_OFFSET = p.CONFIG_SIZE  # 56
EXT_SIZE = 8
_EXT = struct.Struct("<H6x")


def check_memory_type(value: str) -> int:
    """The type's number; ConfigError in QEMU's wording for a bad value."""
    if value not in MEMORY_TYPES:
        raise ConfigError(f"Parameter 'x-memory-type' does not accept value '{value}' "
                          "(ram, ram-huge)")
    return MEMORY_TYPES[value]


def extension_features(device: VirtioMemDevice) -> int:
    """The experimental feature bits the device offers (0 unless a property asked)."""
    bits = 0
    if device.requests is not None:
        bits |= 1 << VIRTIO_MEM_F_X_GUEST_REQUESTS
    if device.options.memory_type:
        bits |= 1 << VIRTIO_MEM_F_X_MEMORY_TYPE
    return bits


def read_config(device: VirtioMemDevice, offset: int, size: int) -> int:
    """The device's config space, with the memory-type extension when it has a type."""
    if not device.options.memory_type or offset + size <= EXT_OFFSET:
        return device.read_config(offset, size)
    if offset < 0 or size <= 0 or offset + size > EXT_OFFSET + EXT_SIZE:
        return 0
    image = device.config_bytes() + _EXT.pack(MEMORY_TYPES[device.options.memory_type])
    return int.from_bytes(image[offset : offset + size], "little")
