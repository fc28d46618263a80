"""One test per device-normative statement of virtio 1.2 §5.15 (Memory Device).

Statement (section) -> test
Config layout (5.15.4.2):
  MAY change usable_region_size and requested_size
      -> test_device_may_change_usable_region_size_and_requested_size
  MUST NOT change block_size, node_id, addr, region_size except during system reset
      -> test_device_must_not_change_block_size_node_id_addr_region_size
  MUST change plugged_size to reflect plugged blocks
      -> test_device_must_change_plugged_size_to_reflect_plugged_blocks
  MUST set usable_region_size >= requested_size
      -> test_device_must_set_usable_region_size_at_least_requested_size
  MUST set block_size to a power of two -> test_device_must_set_block_size_to_power_of_two
  MUST set addr/region/usable/plugged/requested to multiples of block_size
      -> test_device_must_set_sizes_to_multiples_of_block_size
  MUST set region_size to 0 or greater -> test_device_must_set_region_size_zero_or_greater
  MUST NOT shrink usable_region_size except UNPLUG ALL / system reset
      -> test_device_must_not_shrink_usable_region_except_unplug_all_or_system_reset
  MUST notify when changing usable_region_size or requested_size, except in UNPLUG ALL
      -> test_device_must_send_config_change_when_changing_requested_size,
         test_device_must_send_config_change_when_growing_usable_region_size,
         test_device_must_not_notify_on_unplug_all
  SHOULD NOT notify when changing plugged_size
      -> test_device_should_not_notify_on_plugged_size_change
  MAY notify even if nothing changed -> test_device_may_notify_spuriously
Initialization (5.15.5.1):
  MAY fail to operate if UNPLUGGED_INACCESSIBLE not accepted
      -> test_device_may_refuse_features_without_unplugged_inaccessible
  MUST NOT change block state during device reset
      -> test_device_must_not_change_block_state_during_device_reset
  MUST NOT modify memory of plugged blocks during device reset
      -> test_device_must_not_modify_plugged_memory_during_device_reset
Operation (5.15.6.1):
  MUST NOT modify memory of plugged blocks
      -> test_device_must_not_modify_memory_of_plugged_blocks
  MUST provide same memory properties as RAM; MUST allow access to plugged blocks; without
  UNPLUGGED_INACCESSIBLE MUST allow CPU reads of unplugged blocks -> enforced by the
      emulator's stage-2 mapping (tests/emulator), not testable in the pure model
  MAY modify memory of unplugged blocks (discard on unplug)
      -> test_device_may_discard_memory_of_unplugged_blocks
  MAY change block state during system reset; SHOULD unplug all during system reset
      -> test_device_should_unplug_all_during_system_reset
  (initial start: all blocks unplugged) -> test_device_starts_with_all_blocks_unplugged
PLUG (5.15.6.2.2), UNPLUG (5.15.6.3.2), STATE (5.15.6.5.2):
  MUST ignore anything except type and request-specific data
      -> test_device_must_ignore_bytes_after_request
  MUST ignore padding -> test_device_must_ignore_padding
  MUST reject with ERROR if addr unaligned / nb_blocks == 0 / outside usable region
      -> test_device_must_reject_unaligned_addr_with_error,
         test_device_must_reject_zero_nb_blocks_with_error,
         test_device_must_reject_blocks_outside_usable_region_with_error
  PLUG: ERROR if any block already plugged
      -> test_device_must_reject_plug_of_already_plugged_block_with_error
  UNPLUG: ERROR if any block already unplugged
      -> test_device_must_reject_unplug_of_already_unplugged_block_with_error
  MAY reject with BUSY -> test_device_may_answer_busy_when_request_cannot_be_processed
  PLUG: MUST ACK and reflect in plugged_size
      -> test_device_must_ack_plug_and_reflect_in_plugged_size
  UNPLUG: MUST ACK and reflect in plugged_size
      -> test_device_must_ack_unplug_and_reflect_in_plugged_size
UNPLUG ALL (5.15.6.4.2):
  MUST ignore any data except type -> test_device_must_ignore_unplug_all_payload
  MAY reject with BUSY -> test_device_may_answer_busy_to_unplug_all
  MUST ACK when all unplugged and set plugged_size 0
      -> test_device_must_ack_unplug_all_and_set_plugged_size_zero
  MAY modify usable_region_size before ACK -> test_device_may_shrink_usable_region_on_unplug_all
STATE: MUST ACK with PLUGGED / UNPLUGGED / MIXED
  -> test_device_must_answer_state_plugged, _unplugged, _mixed
Intro: "requests to plug ... rejected" once plugged_size >= requested_size
  -> test_device_rejects_plug_beyond_requested_size_with_nack
"""

from __future__ import annotations

import pytest
from vmem_fakes import ADDR, BS, REGION, make_device

from device import virtio_mem_protocol as p
from device.errors import ConfigError
from device.events import BlockStateChange, ConfigChange, DeviceReset
from device.virtio_mem import VirtioMemOptions

# ---------------------------------------------------------------------------- config layout


def test_device_may_change_usable_region_size_and_requested_size() -> None:
    h = make_device(requested=0)
    assert h.dev.usable_region_size == 0
    h.dev.set_requested_size(10 * BS)
    assert h.dev.requested_size == 10 * BS
    assert h.dev.usable_region_size == 10 * BS + 256 * 2**20


def test_device_must_not_change_block_size_node_id_addr_region_size() -> None:
    h = make_device(node_id=1)
    fixed = {k: h.dev.config_fields()[k] for k in ("block_size", "node_id", "addr", "region_size")}
    h.plug(0, 4)
    h.dev.set_requested_size(200 * BS)
    h.plug(10, 50)
    h.unplug_all()
    h.dev.device_reset()
    h.dev.system_reset()
    now = {k: h.dev.config_fields()[k] for k in fixed}
    assert now == fixed
    for name in ("block_size", "node_id", "addr", "region_size"):
        with pytest.raises(AttributeError):
            setattr(h.dev, name, 0)


def test_device_must_change_plugged_size_to_reflect_plugged_blocks() -> None:
    h = make_device()
    h.plug(0, 3)
    h.plug(7, 2)
    h.unplug(1)
    assert h.dev.plugged_size == 4 * BS == h.dev.read_config(40, 8)


def test_device_must_set_usable_region_size_at_least_requested_size() -> None:
    h = make_device(requested=0)
    for req in (BS, 100 * BS, REGION, 3 * BS, 0, REGION - BS):
        h.dev.set_requested_size(req)
        assert h.dev.usable_region_size >= h.dev.requested_size


def test_device_must_set_block_size_to_power_of_two() -> None:
    with pytest.raises(ConfigError, match="has to be a power of two"):
        make_device_with_block(3 * 2**20)
    assert make_device().dev.read_config(0, 8) == BS


def make_device_with_block(block: int) -> None:
    from device.virtio_mem import VirtioMemDevice

    VirtioMemDevice(
        "x", addr=0, region_size=12 * 2**20, block_size=block, backend=_NullBackend(), emit=print
    )


class _NullBackend:
    def plug(self, offset: int, size: int) -> None: ...
    def unplug(self, offset: int, size: int) -> None: ...


def test_device_must_set_sizes_to_multiples_of_block_size() -> None:
    h = make_device(requested=3 * BS)
    h.plug(0, 2)
    h.dev.set_requested_size(77 * BS)
    for name in ("addr", "region_size", "usable_region_size", "plugged_size", "requested_size"):
        assert h.dev.config_fields()[name] % BS == 0, name
    with pytest.raises(ConfigError):
        h.dev.set_requested_size(BS + 4096)


def test_device_must_set_region_size_zero_or_greater() -> None:
    assert make_device().dev.read_config(24, 8) == REGION > 0


def test_device_must_not_shrink_usable_region_except_unplug_all_or_system_reset() -> None:
    h = make_device(requested=100 * BS)
    big = h.dev.usable_region_size
    h.dev.set_requested_size(2 * BS)
    assert h.dev.usable_region_size == big  # requested shrank, usable did not
    h.plug(0, 2)
    h.unplug(0, 2)
    assert h.dev.usable_region_size == big
    assert h.unplug_all() == "ACK"
    assert h.dev.usable_region_size == 2 * BS + 256 * 2**20 < big
    h.dev.set_requested_size(0)
    h.dev.system_reset()
    assert h.dev.usable_region_size == 0


def test_device_must_send_config_change_when_changing_requested_size() -> None:
    h = make_device(requested=0)
    h.dev.set_requested_size(4 * BS)
    assert h.notifications == [1]
    ev = [e for e in h.events if isinstance(e, ConfigChange)][-1]
    assert ev.notified and ev.fields["requested_size"] == 4 * BS


def test_device_must_send_config_change_when_growing_usable_region_size() -> None:
    h = make_device(requested=BS)
    h.dev.set_requested_size(200 * BS)
    ev = [e for e in h.events if isinstance(e, ConfigChange)][-1]
    assert "usable_region_size" in ev.fields and ev.notified
    assert h.notifications == [1]


def test_device_must_not_notify_on_unplug_all() -> None:
    h = make_device(requested=100 * BS)
    h.plug(0, 5)
    h.dev.set_requested_size(BS)
    h.notifications.clear()
    h.events.clear()
    assert h.unplug_all() == "ACK"
    assert h.notifications == []
    changes = [e for e in h.events if isinstance(e, ConfigChange)]
    assert changes and not any(c.notified for c in changes)
    assert "usable_region_size" in changes[-1].fields  # it did shrink, silently


def test_device_should_not_notify_on_plugged_size_change() -> None:
    h = make_device()
    h.plug(0, 8)
    h.unplug(0, 4)
    assert h.notifications == []


def test_device_may_notify_spuriously() -> None:
    h = make_device(requested=4 * BS)
    h.dev.set_requested_size(4 * BS)  # unchanged: QEMU still notifies
    assert h.notifications == [1]
    assert h.events[-1] == ConfigChange("vmem0", {}, True)


# ---------------------------------------------------------------------------- initialization


def test_device_may_refuse_features_without_unplugged_inaccessible() -> None:
    h = make_device(options=VirtioMemOptions(unplugged_inaccessible=True))
    offered = h.dev.device_features
    assert offered >> p.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE & 1
    assert h.dev.features_ok(offered)
    assert not h.dev.features_ok(offered & ~(1 << p.VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE))


def test_device_must_not_change_block_state_during_device_reset() -> None:
    h = make_device()
    h.plug(3, 5)
    before = (h.dev.bitmap_bytes(), h.dev.plugged_size, h.dev.usable_region_size)
    h.dev.device_reset()
    assert (h.dev.bitmap_bytes(), h.dev.plugged_size, h.dev.usable_region_size) == before
    assert h.events[-1] == DeviceReset("vmem0", "device")


def test_device_must_not_modify_plugged_memory_during_device_reset() -> None:
    h = make_device()
    h.plug(0, 5)
    h.backend.calls.clear()
    h.dev.device_reset()
    assert h.backend.calls == []


# ---------------------------------------------------------------------------- operation


def test_device_must_not_modify_memory_of_plugged_blocks() -> None:
    h = make_device()
    h.plug(0, 10)
    h.backend.calls.clear()
    h.plug(20, 3)
    h.unplug(20, 3)
    h.state(0, 10)
    assert all(off >= 20 * BS for _, off, _ in h.backend.calls)


def test_device_may_discard_memory_of_unplugged_blocks() -> None:
    h = make_device()
    h.plug(4, 2)
    h.unplug(4, 2)
    assert h.backend.calls[-1] == ("unplug", 4 * BS, 2 * BS)


def test_device_starts_with_all_blocks_unplugged() -> None:
    h = make_device()
    assert h.dev.plugged_size == 0 and h.dev.bitmap.count(1) == 0
    assert h.backend.calls == []


def test_device_should_unplug_all_during_system_reset() -> None:
    h = make_device()
    h.plug(0, 3)
    h.plug(10, 2)
    h.backend.calls.clear()
    h.dev.system_reset()
    assert h.dev.plugged_size == 0 and h.dev.bitmap.count(1) == 0
    # QEMU virtio_mem_unplug_all: one discard of the whole RAM block
    assert h.backend.calls == [("unplug", 0, REGION)]
    assert DeviceReset("vmem0", "system") in h.events


# ---------------------------------------------------------------------------- requests


def test_device_must_ignore_bytes_after_request() -> None:
    h = make_device()
    req = p.pack_request(p.VIRTIO_MEM_REQ_PLUG, ADDR, 2) + b"\xff" * 40
    assert p.unpack_response(h.dev.handle_request(req))[0] == p.VIRTIO_MEM_RESP_ACK


@pytest.mark.parametrize("req_type", [0, 1, 3])
def test_device_must_ignore_padding(req_type: int) -> None:
    h = make_device()
    h.plug(0, 2)
    clean = bytearray(p.pack_request(req_type, ADDR, 2))
    dirty = bytearray(clean)
    dirty[2:8] = b"\xaa" * 6
    dirty[18:24] = b"\x55" * 6
    h2 = make_device()
    h2.plug(0, 2)
    assert h.dev.handle_request(bytes(clean)) == h2.dev.handle_request(bytes(dirty))
    assert h.dev.bitmap_bytes() == h2.dev.bitmap_bytes()


def test_device_must_ignore_unplug_all_payload() -> None:
    h = make_device()
    h.plug(0, 2)
    req = bytearray(p.pack_request(p.VIRTIO_MEM_REQ_UNPLUG_ALL, 0xDEAD_BEEF, 999))
    req[2:8] = b"\x77" * 6
    assert p.unpack_response(h.dev.handle_request(bytes(req))) == (p.VIRTIO_MEM_RESP_ACK, 0)
    assert h.dev.plugged_size == 0


@pytest.mark.parametrize("req_type", [0, 1, 3])
def test_device_must_reject_unaligned_addr_with_error(req_type: int) -> None:
    h = make_device()
    assert h.req(req_type, ADDR + 4096, 1)[0] == "ERROR"


@pytest.mark.parametrize("req_type", [0, 1, 3])
def test_device_must_reject_zero_nb_blocks_with_error(req_type: int) -> None:
    h = make_device()
    assert h.req(req_type, ADDR, 0)[0] == "ERROR"


@pytest.mark.parametrize("req_type", [0, 1, 3])
def test_device_must_reject_blocks_outside_usable_region_with_error(req_type: int) -> None:
    h = make_device(requested=4 * BS)  # usable = 4 blocks + 256 MiB = 132 blocks
    usable_blocks = h.dev.usable_region_size // BS
    assert h.req(req_type, ADDR + usable_blocks * BS, 1)[0] == "ERROR"  # first beyond
    assert h.req(req_type, ADDR + (usable_blocks - 1) * BS, 2)[0] == "ERROR"  # straddles
    assert h.req(req_type, ADDR - BS, 1)[0] == "ERROR"  # below the region
    assert h.req(req_type, ADDR + REGION, 1)[0] == "ERROR"  # beyond the region


def test_device_must_reject_plug_of_already_plugged_block_with_error() -> None:
    h = make_device()
    assert h.plug(5) == "ACK"
    assert h.plug(4, 2) == "ERROR"
    assert h.dev.plugged_size == BS


def test_device_must_reject_unplug_of_already_unplugged_block_with_error() -> None:
    h = make_device()
    h.plug(0, 2)
    assert h.unplug(1, 2) == "ERROR"
    assert h.dev.plugged_size == 2 * BS


def test_device_may_answer_busy_when_request_cannot_be_processed() -> None:
    h = make_device()
    h.plug(0)
    h.dev.migration_running = True
    assert h.plug(1) == "BUSY"
    assert h.unplug(0) == "BUSY"
    assert h.dev.plugged_size == BS


def test_device_must_ack_plug_and_reflect_in_plugged_size() -> None:
    h = make_device()
    assert h.plug(2, 64) == "ACK"
    assert h.dev.plugged_size == 64 * BS
    assert BlockStateChange("vmem0", 2, 64, True) in h.events


def test_device_must_ack_unplug_and_reflect_in_plugged_size() -> None:
    h = make_device()
    h.plug(2, 64)
    assert h.unplug(10, 8) == "ACK"
    assert h.dev.plugged_size == 56 * BS


def test_device_may_answer_busy_to_unplug_all() -> None:
    h = make_device()
    h.plug(0)
    h.dev.migration_running = True
    assert h.unplug_all() == "BUSY"
    assert h.dev.plugged_size == BS


def test_device_must_ack_unplug_all_and_set_plugged_size_zero() -> None:
    h = make_device()
    h.plug(0, 3)
    h.plug(9, 1)
    assert h.unplug_all() == "ACK"
    assert h.dev.plugged_size == 0 and h.dev.read_config(40, 8) == 0


def test_device_may_shrink_usable_region_on_unplug_all() -> None:
    h = make_device(requested=100 * BS)
    h.dev.set_requested_size(0)
    assert h.dev.usable_region_size > 0
    assert h.unplug_all() == "ACK"
    assert h.dev.usable_region_size == 0


def test_device_must_answer_state_plugged() -> None:
    h = make_device()
    h.plug(0, 4)
    assert h.state(0, 4) == ("ACK", "PLUGGED")


def test_device_must_answer_state_unplugged() -> None:
    h = make_device()
    h.plug(0, 4)
    assert h.state(4, 4) == ("ACK", "UNPLUGGED")


def test_device_must_answer_state_mixed() -> None:
    h = make_device()
    h.plug(0, 4)
    assert h.state(2, 4) == ("ACK", "MIXED")


def test_device_rejects_plug_beyond_requested_size_with_nack() -> None:
    h = make_device(requested=4 * BS)
    assert h.plug(0, 4) == "ACK"
    assert h.plug(4) == "NACK"
    assert h.plug(10, 5) == "NACK"
