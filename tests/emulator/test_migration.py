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


def test_destination_with_other_block_size_is_refused(make_machine: MachineFactory) -> None:
    source = make_machine()
    wait_settled(source)
    stream = io.BytesIO()
    source.save(stream)
    stream.seek(0)
    cfg = MachineConfig(boot_ram=64 * MiB, devices=[MemoryDeviceConfig(
        id="vm0", memdev="mem0", size=512 * MiB, block_size=4 * MiB)])
    dest = make_machine(cfg, start=False, incoming=True)
    with pytest.raises(MigrationError, match=r"Property 'block-size' changed from 0x200000 to "
                                             r"0x400000"):
        dest.load_state(stream)


def test_destination_with_smaller_memdev_is_refused(make_machine: MachineFactory) -> None:
    source = make_machine()
    wait_settled(source)
    stream = io.BytesIO()
    source.save(stream)
    stream.seek(0)
    cfg = MachineConfig(boot_ram=64 * MiB, devices=[MemoryDeviceConfig(
        id="vm0", memdev="mem0", size=256 * MiB)])
    dest: Machine = make_machine(cfg, start=False, incoming=True)
    with pytest.raises(MigrationError, match="Size mismatch"):
        dest.load_state(stream)


def test_truncated_stream_fails_cleanly(make_machine: MachineFactory) -> None:
    source = make_machine()
    wait_settled(source)
    stream = io.BytesIO()
    source.save(stream)
    data = stream.getvalue()
    dest = make_machine(small_config(), start=False, incoming=True)
    with pytest.raises(MigrationError):
        dest.load_state(io.BytesIO(data[: len(data) // 2]))
