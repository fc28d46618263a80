"""Engine benchmarks: stage-2 cost, plug/unplug latency, memory given back, idle footprint.

Each result is compared against a baseline measured in the same run (a ratio), never against
a fixed number of seconds. Run with ``make bench``; one JSON object per line.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import threading
import time
from typing import Any, cast

from unicorn import (
    UC_ARCH_ARM64,
    UC_MODE_ARM,
    UC_PROT_ALL,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
)
from unicorn import arm64_const as arm
from unicorn.unicorn_py3.arch.arm64 import UcAArch64

from device.virtio_mem import VirtioMemDevice
from emulator import Machine, MachineConfig, MemoryDeviceConfig
from emulator.backing import HostMemory
from emulator.board import ZERO_PAGE_PA, new_engine
from emulator.config import GiB, MiB
from emulator.stage2 import TLB_PAGE_SIZE, Stage2
from emulator.workload import Workload

# outer: mov x3,x0; add x4,x0,x1
# inner: ldr x5,[x3]; add x5,x5,#1; str x5,[x3],#64; cmp x3,x4; b.lo inner
#        subs x2,x2,#1; b.ne outer; nop
LOOP = bytes.fromhex(
    "e30300aa0400018b650040f9a5040091650404f87f0004eb83ffff54420400f101ffff541f2003d5"
)
LOOP_END = 0x24
CODE = 0x4008_0000
DATA = 0x4010_0000
DEVICE = 0x8000_0000


def _plugged_device(addr: int, size: int) -> VirtioMemDevice:
    """A device with every block plugged, through the real request path."""

    class _NoBackend:
        def plug(self, offset: int, size: int) -> None: ...
        def unplug(self, offset: int, size: int) -> None: ...

    dev = VirtioMemDevice("bench", addr=addr, region_size=size, block_size=2 * MiB,
                          requested_size=size, backend=_NoBackend(), emit=lambda e: None)
    request = struct.pack("<HxxxxxxQH6x", 0, addr, size // (2 * MiB))  # PLUG
    assert dev.handle_request(request)[:2] == b"\0\0"  # ACK
    return dev


class _LoopEngine:
    """The load/add/store loop on an engine of its own, with or without stage 2.

    ``fill`` is None for plain Unicorn (identity mapping, no hook: the baseline), else the
    stage-2 implementation, "native" or "python", set up exactly as ``emulator.board`` does.
    Both engines use the machine's 4 KiB TLB pages.
    """

    def __init__(self, fill: str | None, where: str, working_set: int, rounds: int) -> None:
        if fill is None:
            self.uc = cast(UcAArch64, Uc(UC_ARCH_ARM64, UC_MODE_ARM))
            self.uc.ctl_set_page_size(TLB_PAGE_SIZE)  # before anything initialises the engine
        else:
            self.uc = new_engine()
        self.ram = HostMemory(0x4000_0000, 64 * MiB, "ram")
        self.device_mem = HostMemory(DEVICE, max(working_set, 2 * MiB), "dev")
        self.stage2: Stage2 | None = None  # the C fill's map must outlive the engine
        if fill is not None:
            s2 = Stage2(ZERO_PAGE_PA, fill=fill)
            if s2.kind != fill:
                raise RuntimeError(f"the {fill} stage-2 fill is not available")
            s2.add_identity(CODE, TLB_PAGE_SIZE, UC_PROT_ALL)  # as the board maps its image
            s2.add_identity(self.ram.gpa, self.ram.size, UC_PROT_READ | UC_PROT_WRITE)
            s2.add_device(_plugged_device(DEVICE, self.device_mem.size))
            s2.install(self.uc)
            self.stage2 = s2
        self.uc.mem_map_ptr(self.ram.gpa, self.ram.size, UC_PROT_ALL, self.ram.pointer)
        self.uc.mem_map_ptr(self.device_mem.gpa, self.device_mem.size, UC_PROT_ALL,
                            self.device_mem.pointer)
        self.uc.mem_write(CODE, LOOP)
        # touch the working set first: the host's first-touch page faults are not stage 2
        start = (DATA - self.ram.gpa) if where == "boot" else 0
        (self.ram if where == "boot" else self.device_mem).write(start, bytes(working_set))
        self.uc.reg_write(arm.UC_ARM64_REG_X0, DATA if where == "boot" else DEVICE)
        self.uc.reg_write(arm.UC_ARM64_REG_X1, working_set)
        self.uc.reg_write(arm.UC_ARM64_REG_X2, rounds)
        self.stores = rounds * (working_set // 64)

    def run(self) -> float:
        """Seconds the loop took."""
        start = time.perf_counter()
        self.uc.emu_start(CODE, CODE + LOOP_END)
        return time.perf_counter() - start

    def close(self) -> None:
        del self.uc
        gc.collect()
        self.ram.close()
        self.device_mem.close()


def _loop_rate(fill: str | None, where: str, working_set: int, rounds: int) -> float:
    """Guest loop stores per second on one engine."""
    engine = _LoopEngine(fill, where, working_set, rounds)
    try:
        return engine.stores / engine.run()
    finally:
        engine.close()


def _fills() -> list[str]:
    """The fill machines use here (it carries the targets), then the other one if built."""
    default = Stage2(ZERO_PAGE_PA).kind  # native where built, unless VMEMLAB_STAGE2=python
    other = "python" if default == "native" else "native"
    return [default, other] if Stage2(ZERO_PAGE_PA, fill=other).kind == other else [default]


def bench_stage2_overhead() -> list[dict[str, Any]]:
    """The same load/add/store loop with and without stage 2, in boot RAM and device memory.

    A working set that fits Unicorn's TLB (256 KiB) pays stage 2 once; one that streams
    through 16 MiB misses the TLB on every 4 KiB page: a fill per 64 stores, in C with the
    native fill, a Python call with the Python fill (rows ending in ``_python_fill``). The
    fill machines use carries the target; the other is measured for comparison.
    """
    out = []
    fills = _fills()
    for fill in fills:
        suffix = "" if fill == "native" else "_python_fill"
        for where in ("boot", "device"):
            for working_set, rounds in ((256 * 1024, 400), (16 * MiB, 8)):
                base, s2 = 0.0, 0.0
                for _ in range(3):  # interleaved, so a busy moment hits both alike
                    base = max(base, _loop_rate(None, where, working_set, rounds))
                    s2 = max(s2, _loop_rate(fill, where, working_set, rounds))
                row: dict[str, Any] = {
                    "bench": f"stage2_loop_{where}_{working_set // 1024}KiB{suffix}",
                    "unit": "stores/s", "value": round(s2), "baseline": round(base),
                    "fill": fill, "ratio": round(s2 / base, 3),
                }
                if fill == fills[0]:
                    row.update(target=">= 0.9", ok=s2 / base >= 0.9)
                else:
                    row.update(target="none: the fill machines here do not use")
                out.append(row)
    return out


def _many_rate(fill: str, machines: int, rounds: int) -> float:
    """Aggregate stores/s of ``machines`` engines streaming 16 MiB of device memory at once,
    each in a thread of its own (as each machine has its vCPU thread)."""
    engines = [_LoopEngine(fill, "device", 16 * MiB, rounds) for _ in range(machines)]
    gate = threading.Barrier(machines + 1)
    errors: list[BaseException] = []

    def vcpu(engine: _LoopEngine) -> None:
        gate.wait()
        try:
            engine.run()
        except BaseException as exc:  # reported below, never lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=vcpu, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    gate.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    stores = sum(e.stores for e in engines)
    for e in engines:
        e.close()
    if errors:
        raise errors[0]
    return stores / elapsed


def bench_stage2_many_machines() -> list[dict[str, Any]]:
    """8 and 30 machines streaming device memory at once: the native fill against the Python
    fill. With the Python fill every TLB miss of every machine takes the GIL; the native fill
    never enters Python, so the machines run in parallel on every core there is.
    """
    if "native" not in _fills():
        return [{"bench": "stage2_many_machines", "skipped": "the native fill is not built"}]
    out = []
    for machines, rounds in ((8, 16), (30, 8)):
        native = max(_many_rate("native", machines, rounds) for _ in range(2))
        python = max(_many_rate("python", machines, rounds) for _ in range(2))
        out.append({
            "bench": f"stage2_many_machines_{machines}_device_16384KiB",
            "unit": "stores/s (all machines)", "value": round(native),
            "baseline": round(python), "baseline_is": "the Python fill",
            "ratio": round(native / python, 3), "cores": os.cpu_count(),
            "target": ">= 2", "ok": native / python >= 2,
        })
    return out


def _settle(machine: Machine, dev: str, timeout: float = 300) -> float:
    start = time.perf_counter()
    ok = machine.wait_until(
        lambda m: m.devices[dev].plugged_size == m.devices[dev].requested_size
        and m.guest_states.get(dev) == "idle", timeout, poll=0.0005)
    if not ok:
        raise RuntimeError(f"{dev} did not settle: {machine.guest_states}")
    return time.perf_counter() - start


def _resize_times(size: int, rounds: int = 3) -> tuple[float, float]:
    """Median seconds for 0 → size and size → 0, the whole path, on one machine.

    Boot RAM holds the memory map of the added memory (64 bytes per 4 KiB page, as in Linux:
    1 GiB for 64 GiB), so it grows with the size: 256 MiB, or size / 32.
    """
    cfg = MachineConfig(boot_ram=max(256 * MiB, size // 32), devices=[
        MemoryDeviceConfig(id="vm0", size=size, requested_size=0)])
    plugs, unplugs = [], []
    with Machine(cfg) as machine:
        machine.start()
        _settle(machine, "vm0")
        for _ in range(rounds):
            t0 = time.perf_counter()
            machine.set_requested_size("vm0", size)
            _settle(machine, "vm0")
            plugs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            machine.set_requested_size("vm0", 0)
            _settle(machine, "vm0")
            unplugs.append(time.perf_counter() - t0)
    return statistics.median(plugs), statistics.median(unplugs)


def bench_plug_latency() -> list[dict[str, Any]]:
    """requested-size change → plugged_size == requested_size and the driver idle.

    Medians of 3 rounds. "No worse than linear" allows 25 % for noise: at 1 GiB the whole
    operation takes a few milliseconds.
    """
    results = {size: _resize_times(size) for size in (1 * GiB, 64 * GiB)}
    out = []
    for size, (plug, unplug) in results.items():
        gib = size / GiB
        for name, secs in (("plug", plug), ("unplug", unplug)):
            out.append({
                "bench": f"{name}_{int(gib)}GiB_2MiB_blocks", "unit": "ms/GiB",
                "value": round(secs * 1000 / gib, 2), "seconds": round(secs, 4),
                "GiB/s": round(gib / secs, 1), "target": "<= 50", "ok": secs * 1000 / gib <= 50,
            })
    for i, name in enumerate(("plug", "unplug")):
        per_gib_small = results[1 * GiB][i]
        per_gib_big = results[64 * GiB][i] / 64
        out.append({
            "bench": f"{name}_scaling_64GiB_vs_1GiB", "unit": "ratio of ms/GiB",
            "value": round(per_gib_big / per_gib_small, 3), "baseline": "1 GiB in the same run",
            "target": "<= 1.25 (linear, with noise)", "ok": per_gib_big <= per_gib_small * 1.25,
        })
    return out


def bench_residency_release() -> list[dict[str, Any]]:
    touched = 1 * GiB
    cfg = MachineConfig(boot_ram=128 * MiB, devices=[
        MemoryDeviceConfig(id="vm0", size=2 * GiB, requested_size=touched)])
    with Machine(cfg) as machine:
        machine.start()
        _settle(machine, "vm0")
        work = Workload(machine)
        alloc = work.alloc(touched, target="vm0")
        region = machine.regions["vm0"]
        before = region.resident_bytes()
        work.free(alloc)
        machine.set_requested_size("vm0", 0)
        _settle(machine, "vm0")
        after = region.resident_bytes()
    released = (before - after) / before
    return [{
        "bench": "residency_released_after_unplug_1GiB_touched", "unit": "fraction",
        "value": round(released, 4), "baseline": before, "after": after,
        "target": ">= 0.99", "ok": released >= 0.99,
    }]


_RSS_PROBE = """
import gc, json, sys
from emulator.snapshot import host_rss
from emulator import Machine, MachineConfig
from emulator.config import MiB
import emulator.machine, unicorn
gc.collect()
base = host_rss()
m = Machine(MachineConfig(boot_ram=256 * MiB))
m.start()
m.wait_until(lambda m: m.guest_booted, 30)
import time; time.sleep(0.3)
gc.collect()
print(json.dumps({"base": base, "idle": host_rss()}))
m.close()
"""


def bench_idle_rss() -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-c", _RSS_PROBE], capture_output=True, text=True,
                         check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    extra = (data["idle"] - data["base"]) / MiB
    return [{
        "bench": "idle_machine_rss_256MiB_boot_ram", "unit": "MiB above interpreter",
        "value": round(extra, 1), "baseline": round(data["base"] / MiB, 1),
        "target": "<= 40", "ok": extra <= 40,
    }]


def run() -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for bench in (bench_stage2_overhead, bench_stage2_many_machines, bench_plug_latency,
                  bench_residency_release, bench_idle_rss):
        results.extend(bench())
    return results


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
