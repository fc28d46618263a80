"""save()/load() of device and transport: roundtrip, JSON-ability, QEMU sanity-check errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from vmem_fakes import ADDR, BS, REGION, MiniDriver, RecordingBackend, make_device, make_transport

from device import virtio_mem_protocol as p
from device.errors import MigrationError
from device.virtio_mem import VirtioMemDevice
from device.virtio_mmio import QUEUE_READY, STATUS


def _dest(**kw: int) -> VirtioMemDevice:
    args = {"addr": ADDR, "region_size": REGION, "block_size": BS, "node_id": 0}
    args.update(kw)
    return VirtioMemDevice("vmem0", backend=RecordingBackend(), emit=lambda e: None, **args)


def _source_state() -> dict:
    h = make_device(requested=40 * BS)
    h.plug(0, 3)
    h.plug(17, 20)
    h.dev.set_requested_size(10 * BS)
    h.dev.driver_features = h.dev.device_features
    return json.loads(json.dumps(h.dev.save()))


def test_roundtrip_restores_everything_without_backend_calls() -> None:
    state = _source_state()
    dest = _dest()
    backend = dest._backend  # the recording fake
    dest.load(state)
    assert dest.plugged_size == 23 * BS
    assert dest.requested_size == 10 * BS  # the stream overrides the destination
    assert dest.usable_region_size == 40 * BS + 256 * 2**20
    assert dest.is_plugged(17) and not dest.is_plugged(3)
    assert dest.driver_features == dest.device_features
    assert dest.save() == state
    assert isinstance(backend, RecordingBackend) and backend.calls == []


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"addr": ADDR + REGION}, "Property 'memaddr' changed from 0x100000000 to 0x120000000"),
        (
            {"region_size": 2 * REGION},
            "Property 'memdev' size changed from 0x20000000 to 0x40000000",
        ),
        ({"block_size": 2 * BS}, "Property 'block-size' changed from 0x200000 to 0x400000"),
        ({"node_id": 1}, "Property 'node' changed from 0 to 1"),
    ],
)
def test_sanity_checks_use_qemu_text(kw: dict[str, int], msg: str) -> None:
    dest = _dest(**kw)
    with pytest.raises(MigrationError) as exc:
        dest.load(_source_state())
    assert str(exc.value) == msg


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.pop("bitmap"),
        lambda s: s.update(bitmap="!!"),
        lambda s: s.update(bitmap="AAAA"),
        lambda s: s.update(plugged_size=BS),
        lambda s: s.update(requested_size=BS + 1),
        lambda s: s.update(usable_region_size=2 * REGION),
        lambda s: s.update(format="other"),
        lambda s: s.update(broken="yes"),
        lambda s: s.update(addr="0x1"),
    ],
)
def test_corrupt_state_is_rejected_atomically(
        mutate: Callable[[dict[str, Any]], None]) -> None:
    state = _source_state()
    mutate(state)
    dest = _dest()
    before = dest.save()
    with pytest.raises(MigrationError):
        dest.load(state)
    assert dest.save() == before


def test_broken_flag_survives_migration() -> None:
    h = make_device()
    h.dev.mark_broken("virtio-mem protocol violation: unknown request type: 9")
    dest = _dest()
    dest.load(h.dev.save())
    assert dest.broken and dest.broken_reason and "unknown request type" in dest.broken_reason


def test_transport_roundtrip_continues_the_ring() -> None:
    h, t, mem, _ = make_transport()
    drv = MiniDriver(t, mem)
    assert drv.init()
    drv.submit(p.pack_request(p.VIRTIO_MEM_REQ_PLUG, ADDR, 2))
    dev_state, t_state = json.loads(json.dumps(h.dev.save())), json.loads(json.dumps(t.save()))

    h2, t2, _, _ = make_transport(requested=0)
    t2.mem = mem  # the machine migrates guest RAM itself
    h2.dev.load(dev_state)
    t2.load(t_state)
    assert t2.read(STATUS, 4) == t.read(STATUS, 4) and t2.read(QUEUE_READY, 4) == 1
    drv.t = t2
    resp = drv.submit(p.pack_request(p.VIRTIO_MEM_REQ_PLUG, ADDR + 2 * BS, 2))
    assert drv.response(resp)[0] == p.VIRTIO_MEM_RESP_ACK
    assert drv.used_idx() == 2 and h2.dev.plugged_size == 4 * BS


def test_transport_load_rejects_bad_state() -> None:
    _, t, _, _ = make_transport()
    state = t.save()
    state.update(queue_ready=True, queue_num=3)
    with pytest.raises(MigrationError):
        t.load(state)
    with pytest.raises(MigrationError):
        t.load({})
