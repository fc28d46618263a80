"""QEMU-specific behaviour of the device model: check order, BUSY, realize/setter errors,
events, UNPLUG_ALL details, the RFC reboot option, protocol violations and speed."""

from __future__ import annotations

import time
from typing import Any

import pytest
from vmem_fakes import ADDR, BS, REGION, RecordingBackend, make_device

from device import virtio_mem_protocol as p
from device.errors import ConfigError, ProtocolViolation
from device.events import (
    BlockStateChange,
    ConfigChange,
    DeviceReset,
    VirtioRequest,
    VirtioResponse,
)
from device.virtio_mem import GiB, MiB, VirtioMemDevice, VirtioMemOptions


def _make(**kw: object) -> VirtioMemDevice:
    args: dict[str, Any] = {
        "addr": ADDR,
        "region_size": REGION,
        "block_size": BS,
        "backend": RecordingBackend(),
        "emit": lambda e: None,
    }
    args.update(kw)
    return VirtioMemDevice("v", **args)


# ---------------------------------------------------------------------------- realize


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"block_size": 512 * 1024}, "'block-size' property has to be at least 0x100000"),
        ({"block_size": 3 * MiB}, "'block-size' property has to be a power of two"),
        (
            {"requested_size": BS + MiB},
            "'requested-size' property has to be multiples of 'block-size' (0x200000)",
        ),
        ({"addr": ADDR + MiB}, "'memaddr' property has to be multiples of 'block-size' (0x200000)"),
        (
            {"region_size": REGION + MiB},
            "'memdev' property memdev size has to be multiples of'block-size' (0x200000)",
        ),
        ({"region_size": 0}, "can't create backend with size 0"),
    ],
)
def test_realize_errors_use_qemu_text(kw: dict[str, int], msg: str) -> None:
    with pytest.raises(ConfigError) as exc:
        _make(**kw)
    assert str(exc.value) == msg


def test_realize_usable_region_like_qemu() -> None:
    assert _make(requested_size=0).usable_region_size == 0
    assert _make(requested_size=BS).usable_region_size == BS + 256 * MiB
    assert _make(requested_size=REGION).usable_region_size == REGION
    arm = VirtioMemOptions(usable_extent=1 * GiB)
    assert _make(requested_size=BS, options=arm).usable_region_size == REGION


def test_usable_region_aligned_up_to_block_size() -> None:
    dev = _make(
        block_size=64 * MiB,
        region_size=16 * 64 * MiB,
        addr=0,
        options=VirtioMemOptions(usable_extent=100 * MiB),
    )
    dev.set_requested_size(64 * MiB)
    assert dev.usable_region_size == 3 * 64 * MiB  # 164 MiB aligned up


def test_nb_blocks_and_block_index() -> None:
    dev = _make()
    assert dev.nb_blocks == 256 and len(dev.bitmap) == 256
    assert dev.block_index(ADDR + 5 * BS + 123) == 5
    with pytest.raises(ValueError):
        dev.block_index(ADDR + REGION)


# ---------------------------------------------------------------------------- requested size


def test_set_requested_size_errors_use_qemu_text() -> None:
    dev = _make()
    with pytest.raises(ConfigError) as e1:
        dev.set_requested_size(MiB)
    assert str(e1.value) == "'requested-size' has to be multiples of 'block-size' (0x200000)"
    with pytest.raises(ConfigError) as e2:
        dev.set_requested_size(REGION + BS)
    assert str(e2.value) == "'requested-size' cannot exceed the memory backend size(0x20000000)"
    with pytest.raises(ConfigError):
        dev.set_requested_size(-BS)
    assert dev.requested_size == 0


def test_set_requested_size_event_lists_changed_fields() -> None:
    h = make_device(requested=0)
    h.dev.set_requested_size(2 * BS)
    assert h.events[-1] == ConfigChange(
        "vmem0", {"usable_region_size": 2 * BS + 256 * MiB, "requested_size": 2 * BS}, True
    )


# ---------------------------------------------------------------------------- check order


def test_qemu_order_error_for_bad_range_before_nack() -> None:
    h = make_device(requested=BS)
    h.plug(0)  # now plugged == requested, so any valid plug would NACK
    assert h.req(0, ADDR + 4096, 1)[0] == "ERROR"
    assert h.req(0, ADDR + h.dev.usable_region_size, 1)[0] == "ERROR"


def test_qemu_order_nack_before_state_error() -> None:
    h = make_device(requested=BS)
    h.plug(0)
    assert h.plug(0) == "NACK"  # already plugged, but NACK is checked first


def test_qemu_order_state_error_before_busy() -> None:
    h = make_device()
    h.plug(0)
    h.dev.migration_running = True
    assert h.plug(0) == "ERROR"
    assert h.unplug(5) == "ERROR"
    assert h.plug(300) == "ERROR"


def test_qemu_order_nack_before_busy() -> None:
    h = make_device(requested=BS)
    h.dev.migration_running = True
    assert h.plug(0, 2) == "NACK"


def test_state_request_not_busy_during_migration() -> None:
    h = make_device()
    h.dev.migration_running = True
    assert h.state(0, 3) == ("ACK", "UNPLUGGED")


def test_unplug_all_with_nothing_plugged_acks_even_during_migration() -> None:
    h = make_device()
    h.dev.migration_running = True
    assert h.unplug_all() == "ACK"  # QEMU only checks busy when vmem->size != 0


def test_backend_plug_failure_answers_busy_without_state_change() -> None:
    h = make_device()
    h.backend.fail_plug = True
    assert h.plug(0, 4) == "BUSY"
    assert h.dev.plugged_size == 0 and h.dev.bitmap.count(1) == 0


def test_backend_unplug_failure_answers_busy_without_state_change() -> None:
    h = make_device()
    h.plug(0, 4)
    h.backend.fail_unplug = True
    assert h.unplug(0, 4) == "BUSY"
    assert h.dev.plugged_size == 4 * BS


def test_unplug_all_backend_failure_is_busy_and_changes_nothing() -> None:
    """QEMU ``virtio_mem_unplug_all``: ``if (ram_block_discard_range(rb, 0,
    qemu_ram_get_used_length(rb))) { return -EBUSY; }`` -- before the bitmap is touched."""
    h = make_device()
    h.plug(0, 2)
    h.plug(5, 2)
    h.plug(10, 2)
    h.backend.fail_unplug = True
    assert h.unplug_all() == "BUSY"
    assert h.dev.bitmap.count(1) == 6 and h.dev.plugged_size == 6 * BS
    h.backend.fail_unplug = False
    assert h.unplug_all() == "ACK" and h.dev.plugged_size == 0


def test_unplug_all_discards_the_whole_region_in_one_call() -> None:
    """QEMU ``virtio_mem_unplug_all``: ``ram_block_discard_range(rb, 0,
    qemu_ram_get_used_length(rb))`` -- the whole RAM block, unplugged blocks too (so data a
    rogue write left in unplugged memory is freed as well); with nothing plugged
    (``if (vmem->size)``) nothing is discarded."""
    h = make_device(requested=200 * BS)
    h.backend.calls.clear()
    assert h.unplug_all() == "ACK"
    assert h.backend.calls == []
    h.plug(0, 10)
    h.plug(10, 10)
    h.plug(40, 1)
    h.plug(127, 1)
    h.backend.calls.clear()
    assert h.unplug_all() == "ACK"
    assert h.backend.calls == [("unplug", 0, REGION)]
    assert h.dev.plugged_size == 0


# ---------------------------------------------------------------------------- events


def test_plug_emits_request_block_state_config_response_in_order() -> None:
    h = make_device()
    h.plug(3, 2)
    assert h.events == [
        VirtioRequest("vmem0", "PLUG", ADDR + 3 * BS, 2),
        BlockStateChange("vmem0", 3, 2, True),
        ConfigChange("vmem0", {"plugged_size": 2 * BS}, False),
        VirtioResponse("vmem0", "PLUG", "ACK", None),
    ]


def test_state_response_event_carries_state() -> None:
    h = make_device()
    h.state(0, 1)
    assert h.events[-1] == VirtioResponse("vmem0", "STATE", "ACK", "UNPLUGGED")
    h.state(0, 0)
    assert h.events[-1] == VirtioResponse("vmem0", "STATE", "ERROR", None)


def test_event_to_dict() -> None:
    assert VirtioRequest("d", "PLUG", 16, 2).to_dict() == {
        "kind": "request",
        "device": "d",
        "type": "PLUG",
        "addr": 16,
        "nb_blocks": 2,
    }
    assert ConfigChange("d", {"plugged_size": 2}, False).to_dict()["fields"] == {"plugged_size": 2}
    assert DeviceReset("d", "system").to_dict() == {
        "kind": "device_reset",
        "device": "d",
        "kind_of_reset": "system",
    }


# ---------------------------------------------------------------------------- protocol errors


def test_short_request_is_protocol_violation_with_qemu_text() -> None:
    h = make_device()
    with pytest.raises(ProtocolViolation) as exc:
        h.dev.handle_request(b"\0" * 23)
    assert str(exc.value) == "virtio-mem protocol violation: invalid request size: 24"
    assert h.events == []


def test_unknown_type_is_protocol_violation_after_request_event() -> None:
    h = make_device()
    with pytest.raises(ProtocolViolation) as exc:
        h.dev.handle_request(p.pack_request(7, ADDR, 1))
    assert str(exc.value) == "virtio-mem protocol violation: unknown request type: 7"
    assert h.events == [VirtioRequest("vmem0", "UNKNOWN(7)", ADDR, 1)]


def test_small_response_space_is_protocol_violation_checked_before_type() -> None:
    h = make_device()
    with pytest.raises(ProtocolViolation) as exc:
        h.dev.handle_request(p.pack_request(9), response_space=4)
    assert str(exc.value) == "virtio-mem protocol violation: not enough space for response: 4"


# ---------------------------------------------------------------------------- resets


def test_device_reset_clears_driver_features_and_broken() -> None:
    h = make_device()
    h.dev.driver_features = h.dev.device_features
    h.dev.mark_broken("x")
    h.dev.device_reset()
    assert h.dev.driver_features == 0 and not h.dev.broken and h.dev.broken_reason is None


def test_system_reset_during_migration_keeps_memory_plugged() -> None:
    h = make_device()
    h.plug(0, 3)
    h.dev.migration_running = True
    h.dev.system_reset()
    assert h.dev.plugged_size == 3 * BS
    assert h.events[-1] == DeviceReset("vmem0", "system")


def test_system_reset_shrinks_usable_region_to_requested() -> None:
    h = make_device(requested=100 * BS)
    h.dev.set_requested_size(2 * BS)
    h.dev.system_reset()
    assert h.dev.usable_region_size == 2 * BS + 256 * MiB
    assert h.dev.requested_size == 2 * BS


def test_rfc_shrink_on_reboot_compacts_plugged_memory() -> None:
    h = make_device(requested=100 * BS, options=VirtioMemOptions(rfc_shrink_on_reboot=True))
    h.plug(0, 2)
    h.plug(10, 3)
    h.plug(50, 1)
    h.backend.calls.clear()
    h.events.clear()
    h.dev.system_reset()
    assert h.dev.bitmap_bytes() == b"\x01" * 6 + b"\x00" * 250
    assert h.dev.plugged_size == 6 * BS
    assert h.dev.usable_region_size == 6 * BS
    assert h.dev.requested_size == 100 * BS
    assert h.backend.calls == [
        ("unplug", 10 * BS, 3 * BS),
        ("unplug", 50 * BS, BS),
        ("plug", 2 * BS, 4 * BS),
    ]
    assert h.events[0] == DeviceReset("vmem0", "system")
    assert h.events[-1] == ConfigChange("vmem0", {"usable_region_size": 6 * BS}, False)
    assert h.plug(6) == "ERROR"  # the area is exactly the plugged memory ...
    h.dev.set_requested_size(100 * BS)  # ... until the host grows it again
    assert h.plug(6) == "ACK"


def test_rfc_shrink_on_reboot_with_nothing_plugged_is_plain_unplug_all() -> None:
    h = make_device(requested=0, options=VirtioMemOptions(rfc_shrink_on_reboot=True))
    h.dev.system_reset()
    assert h.dev.usable_region_size == 0


# ---------------------------------------------------------------------------- features


def test_device_features_bits() -> None:
    h = make_device()
    assert h.dev.device_features == (1 << 32) | 1
    opts = VirtioMemOptions(acpi_pxm=False, unplugged_inaccessible=True, persistent_suspend=True)
    assert make_device(options=opts).dev.device_features == (1 << 32) | 0b110


def test_features_ok_rejects_unoffered_bits_and_missing_version_1() -> None:
    dev = make_device().dev
    assert dev.features_ok(1 << 32)
    assert not dev.features_ok(0)
    assert not dev.features_ok((1 << 32) | (1 << 2))
    dev.driver_features = (1 << 32) | (1 << 1)
    assert dev.unplugged_inaccessible_negotiated


# ---------------------------------------------------------------------------- speed


def test_64_block_request_is_fast() -> None:
    h = make_device(requested=REGION, region=REGION)
    plug = p.pack_request(p.VIRTIO_MEM_REQ_PLUG, ADDR, 64)
    unplug = p.pack_request(p.VIRTIO_MEM_REQ_UNPLUG, ADDR, 64)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        h.dev.handle_request(plug)
        h.dev.handle_request(unplug)
        h.events.clear()
    per_request = (time.perf_counter() - start) / (2 * n)
    assert per_request < 100e-6, per_request
