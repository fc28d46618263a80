"""Property-based tests: random request streams and host resizes keep the device consistent."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vmem_fakes import ADDR, BS, REGION, Harness, make_device

from device import virtio_mem_protocol as p
from device.errors import ConfigError, ProtocolViolation
from device.virtio_mem import VirtioMemOptions

NB = REGION // BS

block_addr = st.one_of(
    st.integers(0, NB + 4).map(lambda b: ADDR + b * BS),
    st.integers(0, 2**64 - 1),
    st.integers(ADDR - BS, ADDR + REGION + BS),
)
request = st.tuples(st.integers(0, 3), block_addr, st.integers(0, 80))
host_op = st.one_of(
    st.tuples(st.just("resize"), st.integers(0, NB + 2).map(lambda b: b * BS)),
    st.tuples(st.just("resize_odd"), st.integers(0, REGION)),
    st.tuples(
        st.sampled_from(
            ["migrate_on", "migrate_off", "system_reset", "device_reset", "fail_on", "fail_off"]
        ),
        st.just(0),
    ),
)
op = st.one_of(request.map(lambda r: ("req", r)), host_op)


def check_invariants(h: Harness) -> None:
    dev = h.dev
    assert dev.plugged_size == dev.bitmap.count(1) * BS
    assert set(dev.bitmap) <= {0, 1}
    usable_blocks = dev.usable_region_size // BS
    assert dev.bitmap.find(1, usable_blocks) == -1, "plugged block beyond usable region"
    assert dev.usable_region_size % BS == 0 and dev.usable_region_size <= REGION
    if not dev.options.rfc_shrink_on_reboot:
        assert dev.usable_region_size >= dev.requested_size
    assert p.unpack_config(dev.config_bytes()) == dev.config_fields()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, NB).map(lambda b: b * BS), st.booleans(), st.lists(op, max_size=60))
def test_random_streams_keep_device_consistent(requested: int, rfc: bool, ops: list) -> None:
    h = make_device(requested=requested, options=VirtioMemOptions(rfc_shrink_on_reboot=rfc))
    check_invariants(h)
    for kind, arg in ops:
        if kind == "req":
            req_type, addr, nb = arg
            before = h.dev.bitmap_bytes()
            out = h.dev.handle_request(p.pack_request(req_type, addr, nb))
            resp, _state = p.unpack_response(out)
            assert len(out) == 10 and resp in p.RESPONSE_NAMES
            unchanged_expected = resp != p.VIRTIO_MEM_RESP_ACK or req_type == 3
            if unchanged_expected and req_type != p.VIRTIO_MEM_REQ_UNPLUG_ALL:
                assert h.dev.bitmap_bytes() == before
            if req_type == p.VIRTIO_MEM_REQ_PLUG and resp == p.VIRTIO_MEM_RESP_ACK:
                assert h.dev.plugged_size <= h.dev.requested_size
        elif kind in ("resize", "resize_odd"):
            try:
                h.dev.set_requested_size(arg)
            except ConfigError:
                assert arg % BS or arg > REGION
        elif kind == "migrate_on":
            h.dev.migration_running = True
        elif kind == "migrate_off":
            h.dev.migration_running = False
        elif kind == "fail_on":
            h.backend.fail_plug = h.backend.fail_unplug = True
        elif kind == "fail_off":
            h.backend.fail_plug = h.backend.fail_unplug = False
        elif kind == "system_reset":
            h.dev.system_reset()
        else:
            before = h.dev.bitmap_bytes()
            h.dev.device_reset()
            assert h.dev.bitmap_bytes() == before
        check_invariants(h)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_arbitrary_request_bytes_only_raise_protocol_violation(raw: bytes) -> None:
    h = make_device()
    try:
        out = h.dev.handle_request(raw)
    except ProtocolViolation as exc:
        assert len(raw) < 24 or struct.unpack_from("<H", raw)[0] > 3, exc
    else:
        assert len(out) == 10
    check_invariants(h)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, NB - 1), st.integers(1, 16)), max_size=40))
def test_save_load_roundtrip_random_state(ops: list[tuple[bool, int, int]]) -> None:
    h = make_device(requested=REGION)
    for plug, block, nb in ops:
        (h.plug if plug else h.unplug)(block, nb)
    state = h.dev.save()
    h2 = make_device(requested=0)
    h2.dev.load(state)
    assert h2.dev.bitmap_bytes() == h.dev.bitmap_bytes()
    assert h2.dev.config_fields() == h.dev.config_fields()
