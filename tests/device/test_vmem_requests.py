"""vmemlab's experimental x-host-request queue (device/virtio_mem_requests.py): the wire
format, the feature bit, each host policy, the held request and what a reset or a migration
does to it. Not in any virtio specification: docs/extensions.md."""

from __future__ import annotations

import pytest
from request_queue_driver import make_request_device
from vmem_fakes import BS, make_transport

from device import virtio_mem_requests as x
from device.errors import ConfigError, MigrationError
from device.events import GuestMemRequest
from device.virtio_mem import MiB, VirtioMemOptions
from device.virtio_mmio import DEVICE_NEEDS_RESET, STATUS

NEED = x.X_REQ_NEED


def need(size: int, node: int = 0, reason: str = "test") -> bytes:
    return x.pack_request(NEED, size, node, reason)


def test_wire_format_sizes_and_round_trip() -> None:
    assert (x.X_REQUEST_SIZE, x.X_RESPONSE_SIZE) == (64, 24)
    raw = x.pack_request(x.X_REQ_OFFER, 0x123456, 3, "because")
    assert raw[:2] == b"\x01\x00" and raw[2:4] == b"\x03\x00" and raw[4:8] == bytes(4)
    req = x.unpack_request(raw)
    assert (req.type, req.node_id, req.size, req.reason) == (1, 3, 0x123456, "because")
    assert x.unpack_response(x.pack_response(x.X_RESP_PARTIAL, 5, 7)) == (1, 5, 7)


def test_reason_is_cut_at_nul_and_made_printable() -> None:
    raw = bytearray(need(BS))
    raw[16:26] = b"ab\x1b[31mc\x00z"
    assert x.unpack_request(bytes(raw)).reason == "ab?[31mc"


def test_feature_bit_and_second_queue_only_with_the_option() -> None:
    h, t, *_ = make_transport()
    assert not h.dev.device_features >> x.VIRTIO_MEM_F_X_GUEST_REQUESTS & 1
    assert len(t.queues) == 1 and h.dev.requests is None
    h, t, *_ = make_transport(options=VirtioMemOptions(guest_requests=True))
    assert h.dev.device_features >> x.VIRTIO_MEM_F_X_GUEST_REQUESTS & 1
    assert len(t.queues) == 2


def test_deny_policy_is_the_default_and_changes_nothing() -> None:
    h, _t, _drv, req, _irqs = make_request_device(requested=0)
    resp_at = req.send(need(16 * MiB))
    assert req.used_idx() == 1
    assert req.response(resp_at) == (x.X_RESP_DENIED, 0, 0)
    assert h.dev.requested_size == 0
    record = h.dev.requests.log[-1]
    assert (record.decision, record.note, record.policy) == ("denied", "policy: deny", "deny")


def test_cap_grants_until_the_cap_then_partial_then_denies() -> None:
    h, _t, _drv, req, irqs = make_request_device(requested=0)
    h.dev.requests.set_policy("cap", cap=20 * MiB)
    assert req.response(req.send(need(16 * MiB))) == (x.X_RESP_GRANTED, 16 * MiB, 16 * MiB)
    assert h.dev.requested_size == 16 * MiB and irqs  # config change + used buffer
    assert req.response(req.send(need(16 * MiB))) == (x.X_RESP_PARTIAL, 4 * MiB, 20 * MiB)
    assert req.response(req.send(need(16 * MiB))) == (x.X_RESP_DENIED, 0, 20 * MiB)
    assert [r.decision for r in h.dev.requests.log] == ["granted", "partial", "denied"]


def test_sizes_round_up_to_the_block_size() -> None:
    h, _t, _drv, req, _irqs = make_request_device(requested=0)
    h.dev.requests.set_policy("cap", cap=64 * MiB)
    assert req.response(req.send(need(1))) == (x.X_RESP_GRANTED, BS, BS)


def test_rate_limit_is_a_token_bucket() -> None:
    now = [100.0]
    h, _t, _drv, req, _irqs = make_request_device(requested=0)
    h.dev.requests._clock = lambda: now[0]  # the device's clock, injected for the test
    h.dev.requests.set_policy("rate", rate=8 * MiB, period=10.0)
    assert req.response(req.send(need(4 * MiB)))[:2] == (x.X_RESP_GRANTED, 4 * MiB)
    assert req.response(req.send(need(8 * MiB)))[:2] == (x.X_RESP_PARTIAL, 4 * MiB)
    assert req.response(req.send(need(2 * MiB)))[:2] == (x.X_RESP_DENIED, 0)
    now[0] += 5.0  # half a period refills half the bucket
    assert req.response(req.send(need(8 * MiB)))[:2] == (x.X_RESP_PARTIAL, 4 * MiB)
    assert h.dev.requests.log[-2].note == "rate limit"


def test_ask_holds_the_buffer_until_the_presenter_answers() -> None:
    h, _t, _drv, req, irqs = make_request_device(requested=0)
    h.dev.requests.set_policy("ask")
    resp_at = req.send(need(6 * MiB, reason="a container wants more"))
    assert req.used_idx() == 0  # held: no answer yet
    pending = h.dev.requests.pending
    assert pending is not None and pending.reason == "a container wants more"
    second = req.send(need(2 * MiB))  # waits in the ring behind the held one
    assert req.used_idx() == 0
    irqs.clear()
    record = h.dev.requests.answer(True, 4 * MiB)  # the presenter grants less
    assert (record.decision, record.granted) == ("partial", 4 * MiB)
    assert req.used_idx() == 1 and irqs
    assert req.response(resp_at) == (x.X_RESP_PARTIAL, 4 * MiB, 4 * MiB)
    assert h.dev.requests.pending is not None  # the next one was popped and is held now
    h.dev.requests.answer(False)
    assert req.used_idx() == 2
    assert req.response(second) == (x.X_RESP_DENIED, 0, 4 * MiB)
    kinds = [e.decision for e in h.events if isinstance(e, GuestMemRequest)]
    assert kinds == ["pending", "partial", "pending", "denied"]


def test_answer_without_a_pending_request_is_refused() -> None:
    h, _t, _drv, _req, _irqs = make_request_device(requested=0)
    with pytest.raises(ConfigError, match="has no pending guest request"):
        h.dev.requests.answer(True)


def test_offer_lowers_requested_size_and_wrong_node_is_denied() -> None:
    h, _t, _drv, req, _irqs = make_request_device(requested=32 * MiB, node_id=1)
    h.dev.requests.set_policy("cap", cap=64 * MiB)
    offer = x.pack_request(x.X_REQ_OFFER, 8 * MiB, 1, "idle")
    assert req.response(req.send(offer)) == (x.X_RESP_GRANTED, 8 * MiB, 24 * MiB)
    assert req.response(req.send(need(8 * MiB, node=0)))[:2] == (x.X_RESP_DENIED, 0)
    assert "node 0 is not this device's node (1)" in h.dev.requests.log[-1].note


@pytest.mark.parametrize("policy, kw, text", [
    ("grant-all", {}, "does not accept value 'grant-all'"),
    ("cap", {"cap": 3 * MiB}, "'cap' has to be multiples of 'block-size'"),
    ("rate", {"period": 0.0}, "'period' has to be between"),
])
def test_bad_policies_are_refused(policy: str, kw: dict, text: str) -> None:
    h, *_ = make_request_device()
    with pytest.raises(ConfigError, match=text):
        h.dev.requests.set_policy(policy, **kw)
    assert h.dev.requests.config.policy == "deny"


def test_protocol_violations_break_the_device() -> None:
    h, t, _drv, req, _irqs = make_request_device()
    req.send(need(BS)[:40])  # too short
    assert h.dev.broken and t.read(STATUS, 4) & DEVICE_NEEDS_RESET
    h, t, _drv, req, _irqs = make_request_device()
    req.send(need(BS), resp_len=8)
    assert h.dev.broken and "not enough space for response: 8" in (h.dev.broken_reason or "")
    h, t, _drv, req, _irqs = make_request_device()
    req.send(x.pack_request(7, BS))
    assert "unknown request type: 7" in (h.dev.broken_reason or "")


def test_a_reset_drops_the_held_request() -> None:
    h, t, _drv, req, _irqs = make_request_device()
    h.dev.requests.set_policy("ask")
    req.send(need(BS))
    assert h.dev.requests.pending is not None
    t.write(STATUS, 4, 0)  # the driver resets the device
    assert h.dev.requests.pending is None
    assert h.dev.requests.log[-1].decision == "dropped"


def test_a_held_request_is_asked_again_after_migration() -> None:
    h, t, _drv, req, _irqs = make_request_device(requested=0)
    h.dev.requests.set_policy("ask")
    req.send(need(4 * MiB))
    state = t.save()
    assert state["x_guest_requests"] == {"policy": {"policy": "ask", "cap": 0, "rate": 0,
                                                    "period": 10.0}, "held": True}
    h2, t2, _drv2, _req2, _irqs2 = make_request_device(requested=0)
    t2.mem = t.mem  # the destination's RAM arrived
    t2.load(state)
    assert h2.dev.requests.pending is None  # nothing held until the queue is processed
    t2.process_queue(1)
    assert h2.dev.requests.pending is not None and h2.dev.requests.pending.size == 4 * MiB
    with pytest.raises(MigrationError, match="invalid request queue state"):
        t2.load({**state, "x_guest_requests": {"policy": {"policy": "nope"}, "held": False}})
