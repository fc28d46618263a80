"""Dynamic memslots (QEMU 8.2 ``dynamic-memslots=on``) in the device model alone.

hw/virtio/virtio-mem.c: ``virtio_mem_prepare_memslots`` initialises the memslots "but don't
map them yet"; ``virtio_mem_set_block_state`` on plug: "Activate before notifying"
(``virtio_mem_activate_memslots_to_plug``); on unplug: "Deactivate completely unplugged
memslots after updating the state"; ``virtio_mem_unplug_all``: "Deactivate all memslots after
updating the state"; ``virtio_mem_post_load_bitmap``: activate the memslots of every plugged
range.
"""

from __future__ import annotations

import pytest
from vmem_fakes import ADDR, BS, RecordingBackend

from device import virtio_mem_protocol as p
from device.errors import ConfigError
from device.virtio_mem import MiB, VirtioMemDevice, VirtioMemOptions

SLOT = 16 * BS  # 32 MiB memslots: 4 for a 128 MiB region


def _device(backend: RecordingBackend | None = None, **options: object) -> VirtioMemDevice:
    opts = VirtioMemOptions(unplugged_inaccessible=True, dynamic_memslots=True,
                            nb_memslots=4, memslot_size=SLOT)
    for key, value in options.items():
        setattr(opts, key, value)
    return VirtioMemDevice("vm0", addr=ADDR, region_size=4 * SLOT, block_size=BS,
                           requested_size=4 * SLOT, options=opts,
                           backend=backend or RecordingBackend(), emit=lambda e: None)


def _req(dev: VirtioMemDevice, kind: int, block: int, nb: int = 1) -> str:
    resp, _ = p.unpack_response(dev.handle_request(p.pack_request(kind, ADDR + block * BS, nb)))
    return p.RESPONSE_NAMES[resp]


def test_memslots_are_mapped_only_while_something_in_them_is_plugged() -> None:
    dev = _device()
    assert bytes(dev.memslots) == bytes(4) and dev.memslot_size == SLOT
    assert _req(dev, p.VIRTIO_MEM_REQ_PLUG, 15, 2) == "ACK"  # spans memslots 0 and 1
    assert bytes(dev.memslots) == b"\x01\x01\x00\x00"
    assert dev.memslot_mapped(0) and dev.memslot_mapped(31) and not dev.memslot_mapped(32)
    assert _req(dev, p.VIRTIO_MEM_REQ_PLUG, 40) == "ACK"
    assert bytes(dev.memslots) == b"\x01\x01\x01\x00"
    assert _req(dev, p.VIRTIO_MEM_REQ_UNPLUG, 16) == "ACK"  # memslot 1 is empty again
    assert bytes(dev.memslots) == b"\x01\x00\x01\x00"
    assert _req(dev, p.VIRTIO_MEM_REQ_UNPLUG_ALL, 0) == "ACK"
    assert bytes(dev.memslots) == bytes(4)


def test_a_failed_plug_maps_nothing() -> None:
    """``if (vmem->prealloc) ... ret = -EBUSY`` comes before the activation."""
    dev = _device(RecordingBackend(fail_plug=True))
    assert _req(dev, p.VIRTIO_MEM_REQ_PLUG, 0) == "BUSY"
    assert bytes(dev.memslots) == bytes(4)


def test_a_migrated_bitmap_maps_its_memslots() -> None:
    src = _device()
    assert _req(src, p.VIRTIO_MEM_REQ_PLUG, 50) == "ACK"
    dst = _device()
    dst.load(src.save())
    assert bytes(dst.memslots) == b"\x00\x00\x00\x01"


def test_without_dynamic_memslots_the_one_memslot_is_always_mapped() -> None:
    dev = _device(dynamic_memslots=False)
    assert bytes(dev.memslots) == b"\x01" and dev.memslot_size == 4 * SLOT
    assert dev.memslot_mapped(63)


def test_dynamic_memslots_need_unplugged_inaccessible_and_a_covering_split() -> None:
    with pytest.raises(ConfigError, match="requires 'unplugged-inaccessible' to be 'on'"):
        _device(unplugged_inaccessible=False)
    with pytest.raises(ConfigError, match="do not cover the region"):
        _device(nb_memslots=2)
    with pytest.raises(ConfigError, match="do not cover the region"):
        _device(memslot_size=SLOT + MiB)
