"""virtio-mem wire format (virtio 1.2 §5.15): constants and struct packing.

Kept apart from the device model so the guest-side tests, the monitor and the UI can decode
requests/config with the same code the device uses. All fields are little-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VIRTIO_ID_MEM = 24
VIRTIO_F_VERSION_1 = 32

VIRTIO_MEM_F_ACPI_PXM = 0
VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE = 1
VIRTIO_MEM_F_PERSISTENT_SUSPEND = 2  # virtio 1.4 drafts only

VIRTIO_MEM_REQ_PLUG = 0
VIRTIO_MEM_REQ_UNPLUG = 1
VIRTIO_MEM_REQ_UNPLUG_ALL = 2
VIRTIO_MEM_REQ_STATE = 3

VIRTIO_MEM_RESP_ACK = 0
VIRTIO_MEM_RESP_NACK = 1
VIRTIO_MEM_RESP_BUSY = 2
VIRTIO_MEM_RESP_ERROR = 3

VIRTIO_MEM_STATE_PLUGGED = 0
VIRTIO_MEM_STATE_UNPLUGGED = 1
VIRTIO_MEM_STATE_MIXED = 2

REQUEST_NAMES = {0: "PLUG", 1: "UNPLUG", 2: "UNPLUG_ALL", 3: "STATE"}
RESPONSE_NAMES = {0: "ACK", 1: "NACK", 2: "BUSY", 3: "ERROR"}
STATE_NAMES = {0: "PLUGGED", 1: "UNPLUGGED", 2: "MIXED"}

# struct virtio_mem_req: le16 type; le16 padding[3]; le64 addr; le16 nb_blocks; le16 padding[3]
_REQ = struct.Struct("<H6xQH6x")
# struct virtio_mem_resp: le16 type; le16 padding[3]; le16 state
_RESP = struct.Struct("<H6xH")
# struct virtio_mem_config: block_size, node_id, padding[6], addr, region_size,
# usable_region_size, plugged_size, requested_size
_CONFIG = struct.Struct("<QH6xQQQQQ")

REQUEST_SIZE = _REQ.size  # 24
RESPONSE_SIZE = _RESP.size  # 10
CONFIG_SIZE = _CONFIG.size  # 56

CONFIG_FIELDS = (
    "block_size",
    "node_id",
    "addr",
    "region_size",
    "usable_region_size",
    "plugged_size",
    "requested_size",
)
CONFIG_OFFSETS = {
    "block_size": 0,
    "node_id": 8,
    "addr": 16,
    "region_size": 24,
    "usable_region_size": 32,
    "plugged_size": 40,
    "requested_size": 48,
}


@dataclass(frozen=True, slots=True)
class MemRequest:
    """Decoded request; ``addr``/``nb_blocks`` are 0 for UNPLUG_ALL as on the wire."""

    type: int
    addr: int
    nb_blocks: int


def request_name(req_type: int) -> str:
    """Name used in events: ``PLUG`` … or ``UNKNOWN(n)``."""
    return REQUEST_NAMES.get(req_type, f"UNKNOWN({req_type})")


def pack_request(req_type: int, addr: int = 0, nb_blocks: int = 0) -> bytes:
    """24-byte request with zero padding (what a well-behaved driver sends)."""
    return _REQ.pack(req_type, addr, nb_blocks)


def unpack_request(data: bytes) -> MemRequest:
    """Decode the first 24 bytes; padding and trailing bytes are ignored (spec: MUST)."""
    req_type, addr, nb_blocks = _REQ.unpack_from(data, 0)
    return MemRequest(req_type, addr, nb_blocks)


def pack_response(resp_type: int, state: int = 0) -> bytes:
    """10-byte response; ``state`` is only meaningful for an ACKed STATE request."""
    return _RESP.pack(resp_type, state)


def unpack_response(data: bytes) -> tuple[int, int]:
    """(type, state) of a 10-byte response."""
    resp_type, state = _RESP.unpack_from(data, 0)
    return resp_type, state


def pack_config(
    *,
    block_size: int,
    node_id: int,
    addr: int,
    region_size: int,
    usable_region_size: int,
    plugged_size: int,
    requested_size: int,
) -> bytes:
    """56-byte config space image."""
    return _CONFIG.pack(
        block_size, node_id, addr, region_size, usable_region_size, plugged_size, requested_size
    )


def unpack_config(data: bytes) -> dict[str, int]:
    """Field name -> value of a 56-byte config image (padding dropped)."""
    return dict(zip(CONFIG_FIELDS, _CONFIG.unpack_from(data, 0), strict=True))
