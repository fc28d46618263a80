"""A hostile guest against the balloon on the real machine: garbage in its rings, PFNs that
name nothing, notifications for queues that do not exist. Contained: never a Python
exception, the vCPU keeps running, at worst the balloon is broken (NEEDS_RESET) -- and the
guest and its virtio-mem device go on working."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device import virtio_balloon_protocol as b
from device.virtio_mmio import DEVICE_NEEDS_RESET, QUEUE_NOTIFY, STATUS
from emulator.config import BalloonConfig, MachineConfig, MemoryDeviceConfig, MiB
from emulator.machine import Machine
from emulator.workload import Workload

DESC = st.tuples(st.integers(0, (1 << 64) - 1) | st.integers(0x4000_0000, 0x43FF_FFFF),
                 st.integers(0, (1 << 32) - 1) | st.integers(0, 4096),
                 st.integers(0, 0xFFFF) | st.integers(0, 7), st.integers(0, 0xFFFF))


def _machine() -> Machine:
    cfg = MachineConfig(boot_ram=64 * MiB, cmdline="memhp_default_state=online_movable",
                        devices=[MemoryDeviceConfig("vm0", 256 * MiB,
                                                    requested_size=64 * MiB)],
                        balloon=BalloonConfig(deflate_on_oom=True, free_page_reporting=True))
    m = Machine(cfg)
    m.start()
    assert m.wait_until(lambda m: m.guest_states.get("balloon0") == "idle"
                        and m.guest_states.get("vm0") == "idle", 10)
    return m


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queue=st.integers(0, 6), descs=st.lists(DESC, min_size=1, max_size=4),
       heads=st.lists(st.integers(0, 0xFFFF) | st.integers(0, 3), min_size=1, max_size=4),
       pfns=st.lists(st.integers(0, (1 << 32) - 1), max_size=64))
def test_garbage_in_the_balloon_rings_is_contained(queue: int, descs: list, heads: list,
                                                   pfns: list[int]) -> None:
    m = _machine()
    try:
        transport = m.board.mmio_slots[-1]
        q = transport.queues[min(queue, len(transport.queues) - 1)]
        ram = m.boot_ram
        with m.device_lock:  # what a rogue guest could write into its own rings
            scratch = q.desc + 16 * len(descs)
            data = struct.pack(f"<{len(pfns)}I", *pfns)
            if data and ram.contains(scratch, len(data)):
                ram.write(scratch - ram.gpa, data)
            for i, (addr, length, flags, nxt) in enumerate(descs):
                ram.write(q.desc - ram.gpa + 16 * i, struct.pack("<QIHH", addr, length,
                                                                  flags, nxt))
            idx = struct.unpack("<H", ram.read(q.driver - ram.gpa + 2, 2))[0]
            for head in heads:
                ram.write(q.driver - ram.gpa + 4 + 2 * (idx % q.num), struct.pack("<H", head))
                idx = (idx + 1) & 0xFFFF
            ram.write(q.driver - ram.gpa + 2, struct.pack("<H", idx))
            transport.write(QUEUE_NOTIFY, 4, queue)
        assert m.runstate == "running"
        balloon = m.balloon
        assert balloon is not None
        if balloon.broken:
            assert transport.read(STATUS, 4) & DEVICE_NEEDS_RESET
        # the guest keeps working: an allocation, and virtio-mem still follows the host
        work = Workload(m, timeout=20)
        assert work.alloc(4 * MiB).pages == 1024
        m.set_requested_size("vm0", 96 * MiB)
        assert m.wait_until(lambda m: m.devices["vm0"].plugged_size == 96 * MiB, 10)
        assert m.runstate == "running"
    finally:
        m.close()


def test_a_guest_that_reports_garbage_pfns_only_wastes_its_own_requests() -> None:
    """PFNs outside RAM and in MMIO are skipped (QEMU's virtio_balloon_bad_addr)."""
    m = _machine()
    try:
        before = m.balloon.ignored_pfns  # type: ignore[union-attr]
        transport = m.board.mmio_slots[-1]
        q = transport.queues[b.INFLATEQ]
        ram = m.boot_ram
        with m.device_lock:
            scratch = q.desc + 64
            bad = [0, 0x0A000, 0x09000, (1 << 32) - 1]  # nothing, virtio-mmio, UART, beyond
            ram.write(scratch - ram.gpa, struct.pack("<4I", *bad))
            ram.write(q.desc - ram.gpa, struct.pack("<QIHH", scratch, 16, 0, 0))
            idx = struct.unpack("<H", ram.read(q.driver - ram.gpa + 2, 2))[0]
            ram.write(q.driver - ram.gpa + 4 + 2 * (idx % q.num), struct.pack("<H", 0))
            ram.write(q.driver - ram.gpa + 2, struct.pack("<H", (idx + 1) & 0xFFFF))
            transport.write(QUEUE_NOTIFY, 4, b.INFLATEQ)
        assert m.balloon.ignored_pfns == before + 4  # type: ignore[union-attr]
        assert not m.balloon.broken and m.runstate == "running"  # type: ignore[union-attr]
        m.set_balloon_target(32 * MiB)  # the guest goes on; nothing broke on the host
        assert m.wait_until(lambda m: m.balloon.actual == 8192, 10)  # type: ignore[union-attr]
    finally:
        m.close()
