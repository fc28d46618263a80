"""Balloon benchmarks: giving 512 MiB back with virtio-balloon vs. with virtio-mem.

The balloon names memory 4 KiB page by 4 KiB page, 256 a request, so 512 MiB are 512
requests where virtio-mem sends one; each is compared with virtio-mem's unplug of the same
size in the same run (a ratio). And inflating must give the host its memory back as
unplugging does: the fraction of touched memory released. One JSON object per line.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from emulator import Machine, MachineConfig, MemoryDeviceConfig
from emulator.config import BalloonConfig, MiB
from emulator.workload import Workload

SIZE = 512 * MiB
PAGES = SIZE // 4096


def _wait(machine: Machine, predicate: Any, what: str) -> None:
    if not machine.wait_until(predicate, 120, poll=0.0005):
        raise RuntimeError(f"{what} did not settle: {machine.guest_states}")


def _balloon_times(rounds: int = 3) -> tuple[float, float]:
    """Median seconds to inflate by 512 MiB and to deflate again (1 GiB guest)."""
    cfg = MachineConfig(boot_ram=1024 * MiB, balloon=BalloonConfig())
    inflate: list[float] = []
    deflate: list[float] = []
    with Machine(cfg) as machine:
        machine.start()
        _wait(machine, lambda m: m.guest_states.get("balloon0") == "idle", "boot")
        for _ in range(rounds):
            for target, want, out in ((512 * MiB, PAGES, inflate), (1024 * MiB, 0, deflate)):
                t0 = time.perf_counter()
                machine.set_balloon_target(target)
                _wait(machine, lambda m, want=want: m.balloon is not None
                      and m.balloon.actual == want and m.guest_states["balloon0"] == "idle",
                      "balloon")
                out.append(time.perf_counter() - t0)
    return statistics.median(inflate), statistics.median(deflate)


def _unplug_time(rounds: int = 3) -> float:
    """Median seconds for virtio-mem to unplug 512 MiB (the baseline)."""
    cfg = MachineConfig(boot_ram=256 * MiB, devices=[
        MemoryDeviceConfig(id="vm0", size=SIZE, requested_size=SIZE)])
    times = []
    with Machine(cfg) as machine:
        machine.start()

        def settled(size: int) -> Any:
            return lambda m: (m.devices["vm0"].plugged_size == size
                              and m.guest_states.get("vm0") == "idle")

        _wait(machine, settled(SIZE), "vm0")
        for _ in range(rounds):
            t0 = time.perf_counter()
            machine.set_requested_size("vm0", 0)
            _wait(machine, settled(0), "vm0")
            times.append(time.perf_counter() - t0)
            machine.set_requested_size("vm0", SIZE)
            _wait(machine, settled(SIZE), "vm0")
    return statistics.median(times)


def bench_inflate_vs_unplug() -> list[dict[str, Any]]:
    inflate, deflate = _balloon_times()
    unplug = _unplug_time()
    return [
        {"bench": "balloon_inflate_512MiB", "unit": "MiB/s", "value": round(512 / inflate),
         "seconds": round(inflate, 4), "requests": PAGES // 256,
         "reference": "QEMU 7.2 TCG + Linux 6.1: ~90 MiB per 0.25 s (11_balloon.txt)"},
        {"bench": "balloon_deflate_512MiB", "unit": "MiB/s", "value": round(512 / deflate),
         "seconds": round(deflate, 4)},
        {"bench": "balloon_inflate_vs_virtio_mem_unplug_512MiB", "unit": "ratio of seconds",
         "value": round(inflate / unplug, 2), "baseline": round(unplug, 4),
         "target": f"<= {PAGES // 256} (512 requests of 256 pages against one request of "
                   "256 blocks: no request may cost more than virtio-mem's)",
         "ok": inflate / unplug <= PAGES // 256},
        {"bench": "balloon_deflate_vs_inflate_512MiB", "unit": "ratio of seconds",
         "value": round(deflate / inflate, 2), "baseline": round(inflate, 4),
         "target": "<= 2 (the same requests, the other way)", "ok": deflate / inflate <= 2},
    ]


def bench_inflate_releases_touched_memory() -> list[dict[str, Any]]:
    cfg = MachineConfig(boot_ram=1024 * MiB, balloon=BalloonConfig())
    with Machine(cfg) as machine:
        machine.start()
        _wait(machine, lambda m: m.guest_states.get("balloon0") == "idle", "boot")
        work = Workload(machine)
        work.free(work.alloc(SIZE))  # touched, then free: the host still backs it
        before = machine.boot_ram.resident_bytes()
        machine.set_balloon_target(1024 * MiB - SIZE - 64 * MiB)  # more than was touched
        _wait(machine, lambda m: m.balloon is not None and m.balloon.actual == PAGES + 16384
              and m.guest_states["balloon0"] == "idle", "balloon")
        after = machine.boot_ram.resident_bytes()
    released = (before - after) / SIZE
    return [{
        "bench": "balloon_residency_released_512MiB_touched", "unit": "fraction",
        "value": round(released, 4), "baseline": before, "after": after,
        "target": ">= 0.99", "ok": released >= 0.99,
    }]


def run() -> list[dict[str, Any]]:
    return [*bench_inflate_vs_unplug(), *bench_inflate_releases_touched_memory()]
