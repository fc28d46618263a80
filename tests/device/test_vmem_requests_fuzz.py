"""Hypothesis over the experimental x-host-request queue (like test_balloon_fuzz.py): hostile
request bytes, descriptors and policies are contained -- never a Python exception out of the
MMIO handler, at worst a broken device (NEEDS_RESET) -- and every answered request gets a
well-formed response that matches what the device did to requested_size."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from request_queue_driver import make_request_device
from vmem_fakes import BS, REGION

from device import virtio_mem_requests as x
from device.virtio_mmio import DEVICE_NEEDS_RESET, QUEUE_NOTIFY, STATUS

POLICIES = st.sampled_from(["deny", "cap", "rate", "ask"])
SIZES = st.integers(0, (1 << 64) - 1) | st.integers(0, 64) .map(lambda n: n * BS) | st.just(1)
REQUESTS = st.builds(lambda t, node, size, reason: struct.pack(
    "<HH4xQ48s", t, node, size, reason), st.integers(0, 3) | st.integers(0, 0xFFFF),
    st.integers(0, 2) | st.integers(0, 0xFFFF), SIZES, st.binary(max_size=48))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=POLICIES, cap=st.integers(0, 300).map(lambda n: n * BS),
       requested=st.integers(0, 64).map(lambda n: n * BS),
       request=REQUESTS | st.binary(max_size=80), resp_len=st.sampled_from([0, 8, 24, 64]))
def test_requests_are_answered_or_break_the_device(policy: str, cap: int, requested: int,
                                                   request: bytes, resp_len: int) -> None:
    h, t, _drv, req, _irqs = make_request_device(requested=requested)
    h.dev.requests.set_policy(policy, cap=cap, rate=cap)
    before = h.dev.requested_size
    resp_at = req.send(request, resp_len=resp_len)
    if h.dev.broken:
        assert t.read(STATUS, 4) & DEVICE_NEEDS_RESET
        assert len(request) < x.X_REQUEST_SIZE or resp_len < x.X_RESPONSE_SIZE or \
            x.unpack_request(request).type not in x.REQUEST_TYPES
        return
    if policy == "ask" and h.dev.requests.pending is not None:
        assert req.used_idx() == 0
        h.dev.requests.answer(True)
    assert req.used_idx() == 1
    kind, granted, after = req.response(resp_at)
    assert kind in x.RESPONSE_TYPES and after == h.dev.requested_size
    assert 0 <= after <= REGION and after % BS == 0
    assert abs(after - before) == granted
    assert (kind == x.X_RESP_DENIED) == (granted == 0)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(descs=st.lists(st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, 1 << 20),
                                st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
                      min_size=1, max_size=6),
       heads=st.lists(st.integers(0, 0xFFFF) | st.integers(0, 4), min_size=1, max_size=4),
       queue=st.integers(0, 3))
def test_hostile_rings_are_contained(descs: list, heads: list[int], queue: int) -> None:
    h, t, _drv, req, _irqs = make_request_device()
    for i, (addr, length, flags, nxt) in enumerate(descs[:4]):
        req.set_desc(i, addr, length, flags, nxt)
    for head in heads:
        slot = req.avail + 4 + 2 * (req.avail_idx % 4)
        req.mem.write(slot, struct.pack("<H", head & 0xFFFF))
        req.avail_idx = (req.avail_idx + 1) & 0xFFFF
    req.mem.write(req.avail + 2, struct.pack("<H", req.avail_idx))
    t.write(QUEUE_NOTIFY, 4, queue)  # never raises
    assert h.dev.broken == bool(t.read(STATUS, 4) & DEVICE_NEEDS_RESET)
