"""How the real guest driver answers the device's responses (Linux's rules)."""

from __future__ import annotations

import itertools
import time

from device.events import VirtioResponse
from emulator.config import MiB
from emulator.events import GuestStatus
from tests.conftest import MachineFactory, small_config, wait_settled


def test_busy_during_migration_is_retried_with_backoff(make_machine: MachineFactory) -> None:
    machine = make_machine(small_config(
        cmdline="memhp_default_state=online_movable virtio_mem.retry_ms=50"))
    wait_settled(machine)
    dev = machine.devices["vm0"]
    machine.call(lambda: setattr(dev, "migration_running", True))
    seq = machine.bus.last_seq
    machine.set_requested_size("vm0", 256 * MiB)
    assert machine.wait_until(lambda m: m.guest_states["vm0"] == "retrying", 10)
    time.sleep(0.3)  # several retry periods
    busy = [r.event for r in machine.bus.since(seq)
            if isinstance(r.event, VirtioResponse) and r.event.response == "BUSY"]
    assert len(busy) >= 2
    assert dev.plugged_size == 128 * MiB  # nothing changed while the device was busy
    # backoff: the gaps between BUSY answers grow
    stamps = [r.time_ns for r in machine.bus.since(seq)
              if isinstance(r.event, VirtioResponse) and r.event.response == "BUSY"]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps[-1] >= gaps[0]
    machine.call(lambda: setattr(dev, "migration_running", False))
    wait_settled(machine)
    assert dev.plugged_size == 256 * MiB


def test_unplug_retries_after_pinned_memory_is_freed(make_machine: MachineFactory) -> None:
    from emulator.workload import Workload

    # ZONE_NORMAL: only there can pinned pages keep a block plugged
    machine = make_machine(small_config(
        cmdline="memhp_default_state=online virtio_mem.retry_ms=50"))
    wait_settled(machine)
    work = Workload(machine)
    pinned = work.alloc(6 * MiB, unmovable=True, target="vm0")
    machine.set_requested_size("vm0", 0)
    wait_settled(machine)
    assert machine.guest_states["vm0"] == "stopped-short"
    assert machine.devices["vm0"].plugged_size == 6 * MiB
    seq = machine.bus.last_seq
    work.free(pinned)
    # no new request from the host: the driver's own retry timer finishes the job
    assert machine.wait_until(lambda m: m.devices["vm0"].plugged_size == 0, 10)
    wait_settled(machine)
    states = [r.event.status for r in machine.bus.since(seq) if isinstance(r.event, GuestStatus)]
    assert states[-1] == "idle"
