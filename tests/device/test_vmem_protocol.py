"""Byte-exact wire formats: 56-byte config, 24-byte requests, 10-byte responses."""

from __future__ import annotations

import struct

from vmem_fakes import ADDR, BS, REGION, make_device

from device import virtio_mem_protocol as p


def test_sizes_match_spec() -> None:
    assert (p.REQUEST_SIZE, p.RESPONSE_SIZE, p.CONFIG_SIZE) == (24, 10, 56)


def test_config_layout_is_byte_exact_little_endian() -> None:
    h = make_device(requested=6 * BS, node_id=3)
    h.plug(0, 2)
    raw = h.dev.config_bytes()
    assert len(raw) == 56
    assert raw[0:8] == BS.to_bytes(8, "little")
    assert raw[8:10] == (3).to_bytes(2, "little")
    assert raw[10:16] == b"\0" * 6
    assert raw[16:24] == ADDR.to_bytes(8, "little")
    assert raw[24:32] == REGION.to_bytes(8, "little")
    assert raw[32:40] == h.dev.usable_region_size.to_bytes(8, "little")
    assert raw[40:48] == (2 * BS).to_bytes(8, "little")
    assert raw[48:56] == (6 * BS).to_bytes(8, "little")
    for name, off in p.CONFIG_OFFSETS.items():
        width = 2 if name == "node_id" else 8
        assert h.dev.read_config(off, width) == h.dev.config_fields()[name]


def test_read_config_partial_widths_and_out_of_range() -> None:
    h = make_device()
    assert h.dev.read_config(16, 4) == ADDR & 0xFFFFFFFF
    assert h.dev.read_config(20, 4) == ADDR >> 32
    assert h.dev.read_config(2, 1) == (BS >> 16) & 0xFF
    assert h.dev.read_config(56, 1) == 0
    assert h.dev.read_config(52, 8) == 0
    assert h.dev.read_config(-1, 4) == 0


def test_request_layout() -> None:
    raw = p.pack_request(p.VIRTIO_MEM_REQ_STATE, 0x1122334455667788, 0xABCD)
    assert raw == struct.pack("<H6xQH6x", 3, 0x1122334455667788, 0xABCD)
    assert raw[0:2] == b"\x03\x00" and raw[16:18] == b"\xcd\xab"
    assert p.unpack_request(raw) == p.MemRequest(3, 0x1122334455667788, 0xABCD)


def test_response_layout() -> None:
    raw = p.pack_response(p.VIRTIO_MEM_RESP_ACK, p.VIRTIO_MEM_STATE_MIXED)
    assert raw == b"\x00\x00" + b"\0" * 6 + b"\x02\x00"
    assert p.unpack_response(raw) == (0, 2)


def test_device_response_is_10_bytes_with_zero_padding() -> None:
    h = make_device()
    out = h.dev.handle_request(p.pack_request(p.VIRTIO_MEM_REQ_PLUG, ADDR, 1))
    assert out == b"\0" * 10
    out = h.dev.handle_request(p.pack_request(p.VIRTIO_MEM_REQ_STATE, ADDR, 2))
    assert out == b"\0" * 8 + b"\x02\x00"


def test_unpack_config_roundtrip() -> None:
    h = make_device()
    assert p.unpack_config(h.dev.config_bytes()) == h.dev.config_fields()


def test_request_names() -> None:
    assert [p.request_name(i) for i in range(5)] == [
        "PLUG",
        "UNPLUG",
        "UNPLUG_ALL",
        "STATE",
        "UNKNOWN(4)",
    ]
