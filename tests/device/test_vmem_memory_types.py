"""vmemlab's experimental memory type (device/virtio_mem_types.py, the RFC addendum 1): the
feature bit, the config-space extension and its layout, and QEMU-style refusals. Not in any
virtio specification: docs/extensions.md."""

from __future__ import annotations

import pytest
from vmem_fakes import MiniDriver, make_transport

from device import virtio_mem_protocol as p
from device import virtio_mem_types as t
from device.errors import ConfigError
from device.virtio_mem import VirtioMemOptions
from device.virtio_mmio import CONFIG


def test_no_type_no_bit_and_the_config_ends_at_56_bytes() -> None:
    h, tr, *_ = make_transport()
    assert not h.dev.device_features >> t.VIRTIO_MEM_F_X_MEMORY_TYPE & 1
    assert tr.read(CONFIG + 56, 2) == 0 and tr.read(CONFIG + 48, 8) == h.dev.requested_size


@pytest.mark.parametrize("name, code", [("ram", 0), ("ram-huge", 1)])
def test_the_type_is_read_at_offset_56(name: str, code: int) -> None:
    h, tr, mem, _irqs = make_transport(options=VirtioMemOptions(memory_type=name))
    assert h.dev.device_features >> t.VIRTIO_MEM_F_X_MEMORY_TYPE & 1
    assert MiniDriver(tr, mem).init()  # a driver may accept the bit
    assert tr.read(CONFIG + t.EXT_OFFSET, 2) == code
    assert tr.read(CONFIG + 58, 4) == 0  # padding
    assert tr.read(CONFIG + 62, 4) == 0  # beyond the 64 bytes: nothing
    # the shipped fields are where virtio 1.2 puts them
    assert tr.read(CONFIG + 0, 8) == h.dev.block_size
    assert t.EXT_OFFSET == p.CONFIG_SIZE == 56 and t.EXT_OFFSET + t.EXT_SIZE == 64


def test_a_bad_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="'x-memory-type' does not accept value 'pmem'"):
        make_transport(options=VirtioMemOptions(memory_type="pmem"))
