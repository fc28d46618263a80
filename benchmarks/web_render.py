"""Browser rendering benchmarks: frame rate with 16,384 changing blocks, event-to-pixel latency.

Drives headless Debian Chromium (Playwright) against a live server. Each number is compared
with a baseline measured in the same run and the same page:

* ``render_16384_blocks_all_changing``: mean frame interval while every one of 16,384 blocks
  changes state on every animation frame (synthetic ``block_state`` batches through the page's
  real event path and grid), against an idle ``requestAnimationFrame`` loop.
* ``event_to_pixel_latency_p95``: time from the engine publishing a ``block_state`` event
  (its wall-clock stamp) to the frame that drew it, for real plug/unplug cycles of a
  16,384-block device, against the page's Socket.IO round trip.

One JSON object per result on stdout (``python -m benchmarks.web_render``).
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Any

from emulator.config import GiB, MachineConfig, MemoryDeviceConfig, MiB
from webapp.live import CHROMIUM, CHROMIUM_ARGS, LiveServer

NB_BLOCKS = 16_384
FRAMES = 180


def big_machine() -> MachineConfig:
    """One 16 GiB device of 16,384 x 1 MiB blocks (address space only until plugged). Boot
    RAM holds the guest's memmap of what is plugged (Linux: 64 bytes per 4 KiB page, 256 MiB
    for all 16 GiB)."""
    return MachineConfig(boot_ram=512 * MiB, devices=[
        MemoryDeviceConfig(id="vm0", memdev="mem0", size=NB_BLOCKS * MiB, block_size=MiB,
                           requested_size=0)])


_FRAME_LOOP = """
async ([frames, nb, load]) => {
  const { model } = await import('/static/model.js');
  const { onBatch } = await import('/static/live.js');
  const gen = model.generation;
  let seq = model.viewSeq + 1;
  const intervals = [], scripts = [];
  let last = 0, plugged = true;
  await new Promise((resolve) => {
    let n = 0;
    function tick(ts) {
      if (last) intervals.push(ts - last);
      last = ts;
      if (n++ >= frames) { resolve(); return; }
      if (load) {
        const t0 = performance.now();
        const events = new Array(nb);
        const wall = Date.now() / 1000;
        for (let i = 0; i < nb; i++) {
          events[i] = {seq: seq++, kind: 'block_state', device: 'vm0', first_block: i, count: 1,
                       plugged: (i & 1) ? plugged : !plugged, wall};
        }
        plugged = !plugged;
        onBatch({generation: gen, events});
        scripts.push(performance.now() - t0);
      }
      requestAnimationFrame(tick);
    }
    requestAnimationFrame(tick);
  });
  const drawn = +document.querySelector('canvas.grid').dataset.frames;
  return {intervals, scripts, drawn};
}
"""


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run() -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        return [{"bench": "web_render", "skipped": f"no Chromium at {CHROMIUM}"}]
    out: list[dict[str, Any]] = []
    with LiveServer({"VMEMLAB_DEFAULT_MACHINE": big_machine,
                     "VMEMLAB_MAX_MACHINE_MEMORY": 32 * GiB}) as server, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script("localStorage.setItem('vmemlab.tour', 'seen')")  # no tour
        page.goto(server.url)
        page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30_000)
        page.wait_for_function(
            f"() => document.querySelector('canvas.grid')?.dataset.blocks === '{NB_BLOCKS}'")
        page.wait_for_timeout(500)

        # -- frame rate: idle rAF loop (baseline) vs. all blocks changing every frame
        idle = page.evaluate(_FRAME_LOOP, [FRAMES, NB_BLOCKS, False])
        busy = page.evaluate(_FRAME_LOOP, [FRAMES, NB_BLOCKS, True])
        base_ms = _mean(idle["intervals"])
        busy_ms = _mean(busy["intervals"])
        draw_ms = page.evaluate(
            f"async () => (await import('/static/grid.js')).stats.drawMs.slice(-{FRAMES})")
        out.append({
            "bench": "render_16384_blocks_all_changing", "unit": "ms/frame",
            "value": round(busy_ms, 2), "baseline": round(base_ms, 2),
            "ratio": round(busy_ms / base_ms, 3), "fps": round(1000 / busy_ms, 1),
            "p95_frame_ms": round(_pct(busy["intervals"], 0.95), 2),
            "apply_ms_mean": round(_mean(busy["scripts"]), 2),
            "draw_ms_mean": round(_mean(draw_ms), 2),
            "changes_per_frame": NB_BLOCKS,
            "target": "ratio <= 1.1 (60 frames/s kept)", "ok": busy_ms / base_ms <= 1.1,
        })

        # -- event-to-pixel latency on the real path (engine → socket → grid → frame)
        page.evaluate(
            "async () => { (await import('/static/grid.js')).stats.latencies.length = 0; }")
        rtts = []
        for _ in range(20):
            rtts.append(page.evaluate("""async () => {
                const t0 = performance.now();
                await (await import('/static/transport.js')).send('ping_vmem', {});
                return performance.now() - t0; }"""))
        cycles = 0
        for size_mib in (4096, 0, 8192, 0, 16384, 0, 2048, 0, 12288, 0):
            page.evaluate("async (s) => (await import('/static/transport.js')).send("
                          "'set_requested_size', {device: 'vm0', size: s * 1048576})", size_mib)
            try:
                page.wait_for_function(
                    f"() => document.querySelector('canvas.grid').dataset.plugged === '{size_mib}'",
                    timeout=60_000)
            except Exception:
                drawn = page.get_attribute("canvas.grid", "data-plugged")
                info = page.request.get(server.url + "/api/machine").json()
                devs = [(d["driver_state"], d["plugged_size"]) for d in info["devices"].values()]
                raise RuntimeError(f"grid shows {drawn} plugged, wanted {size_mib}: {devs}"
                                   ) from None
            cycles += 1
        lat = page.evaluate("async () => (await import('/static/grid.js')).stats.latencies.slice()")
        rtt = statistics.median(rtts)
        p95 = _pct(lat, 0.95)
        out.append({
            "bench": "event_to_pixel_latency_p95", "unit": "ms",
            "value": round(p95, 1), "p50": round(_pct(lat, 0.5), 1),
            "max": round(max(lat), 1) if lat else None, "samples": len(lat),
            "baseline": round(rtt, 2), "baseline_what": "Socket.IO round trip (median)",
            "ratio": round(p95 / rtt, 1) if rtt else None, "cycles": cycles,
            "target": "p95 < 100 ms", "ok": p95 < 100,
        })
        browser.close()
    return out


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
