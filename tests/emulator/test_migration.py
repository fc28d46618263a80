"""Save a running machine, load it into a fresh one: same devices, same data, still running."""

from __future__ import annotations

import io

import pytest

from device.errors import MigrationError
from emulator import Machine, MachineConfig, MemoryDeviceConfig
from emulator.config import MiB
from emulator.workload import Workload
from tests.conftest import MachineFactory, small_config, wait_settled


def test_save_load_keeps_device_state_and_guest_data(make_machine: MachineFactory) -> None:
    source = make_machine()
    wait_settled(source)
    work = Workload(source)
    movable = work.alloc(24 * MiB, target="vm0")
    pinned = work.alloc(8 * MiB, unmovable=True, target="vm0")
    boot = work.alloc(4 * MiB, target="boot")
    stream = io.BytesIO()
    source.save(stream)
    assert source.runstate == "postmigrate"
    # only resident, plugged, non-zero memory travels
    assert source.last_migration_bytes < 64 * MiB

    # the destination starts from a different command line: the stream wins
    dest_cfg = small_config()
    dest_cfg.devices[0].requested_size = 0
    dest = make_machine(dest_cfg, start=False, incoming=True)
    assert dest.runstate == "inmigrate"
    stream.seek(0)
    dest.load_state(stream)
    dest.start()
    assert dest.runstate == "running"
    src_dev, dst_dev = source.devices["vm0"], dest.devices["vm0"]
    assert dst_dev.save() == src_dev.save()
    assert dst_dev.requested_size == 128 * MiB
    dwork = Workload(dest)
    for alloc in (movable, pinned, boot):
        assert dwork.verify(alloc) == (0, alloc.pages)
    # the guest keeps running: it reacts to a resize on the destination
    dest.set_requested_size("vm0", 256 * MiB)
    wait_settled(dest)
    assert dest.devices["vm0"].plugged_size == 256 * MiB
    assert dwork.verify(0)[0] == 0


@pytest.fixture
def saved_stream(make_machine: MachineFactory) -> bytes:
    """The migration stream of a small machine that has settled at 128 MiB."""
    source = make_machine()
    wait_settled(source)
    stream = io.BytesIO()
    source.save(stream)
    return stream.getvalue()


@pytest.mark.parametrize(("device", "error"), [
    (MemoryDeviceConfig(id="vm0", memdev="mem0", size=512 * MiB, block_size=4 * MiB),
     r"Property 'block-size' changed from 0x200000 to 0x400000"),
    (MemoryDeviceConfig(id="vm0", memdev="mem0", size=256 * MiB),
     r'Size mismatch: 0000:00:03.0/mem0: 0x20000000 != 0x10000000: Invalid argument'),
    (MemoryDeviceConfig(id="vm0", memdev="other", size=512 * MiB),
     r'Unknown ramblock "0000:00:03.0/mem0", cannot accept migration'),
])
def test_mismatching_destination_is_refused_with_qemus_message(
        make_machine: MachineFactory, saved_stream: bytes, device: MemoryDeviceConfig,
        error: str) -> None:
    dest: Machine = make_machine(MachineConfig(boot_ram=64 * MiB, devices=[device]),
                                 start=False, incoming=True)
    with pytest.raises(MigrationError, match=error):
        dest.load_state(io.BytesIO(saved_stream))


def test_truncated_stream_fails_cleanly(make_machine: MachineFactory,
                                        saved_stream: bytes) -> None:
    dest = make_machine(small_config(), start=False, incoming=True)
    with pytest.raises(MigrationError):
        dest.load_state(io.BytesIO(saved_stream[: len(saved_stream) // 2]))
