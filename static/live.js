/* The live page's event path: keyframe → build everything; batch → engine events onto the
 * grids and the log; view → the snapshot's exact picture (see model.js for the ordering).
 *
 * The render benchmark feeds synthetic batches through `onBatch` by importing this module
 * in the page (benchmarks/web_render.py).
 */

import { CODE } from "./block-states.js";
import { $ } from "./dom.js";
import { b64, mib } from "./format.js";
import { addSample, initCharts, updateNuma } from "./charts.js";
import { setCapabilities, setPace, updateAllocations } from "./controls.js";
import { buildDevices, setState, updateInflight } from "./devices.js";
import { forgetExplanation, refreshExplanation, showExplanation } from "./explain.js";
import { renderLegend } from "./legend.js";
import { clearLogs, consoleLines, describe, logLine } from "./logs.js";
import { model } from "./model.js";
import { renderRegisters } from "./registers.js";

let violations = 0; // blocked guest writes seen by this page (#devices data-violations)

function blockRange(dev, addr, nb) {
  return [Math.floor((addr - dev.state.addr) / dev.state.block_size), nb];
}

/* A block_state event: the blocks the device (un)plugged, as each view draws them until the
 * next snapshot says more (plugged: free / no host memory yet). */
function applyBlockState(dev, ev) {
  const g = dev.grid;
  const usable = Math.floor(dev.state.usable_region_size / dev.state.block_size);
  if (ev.plugged) {
    g.setRange("guest", ev.first_block, ev.count, CODE.PLUGGED_FREE, ev.wall);
    g.setRange("host", ev.first_block, ev.count, CODE.HOST_PLUGGED_EMPTY, ev.wall);
    return;
  }
  const end = ev.first_block + ev.count;
  const inside = Math.max(0, Math.min(end, usable) - ev.first_block);
  for (const view of ["guest", "host"]) g.setRange(view, ev.first_block, inside, CODE.UNPLUGGED, ev.wall);
  if (end > usable) {
    const from = Math.max(usable, ev.first_block);
    for (const view of ["guest", "host"]) g.setRange(view, from, end - from, CODE.OUTSIDE_USABLE, ev.wall);
  }
}

function applyEvent(ev, now) {
  const dev = ev.device ? model.devices.get(ev.device) : null;
  const fresh = ev.seq > model.viewSeq;
  if (dev && fresh) {
    const g = dev.grid;
    if (ev.kind === "block_state") {
      applyBlockState(dev, ev);
      g.flash(ev.first_block, ev.count, "pulse", now);
      g.seq = ev.seq;
      return; // nothing to log: the grid is the log of block states
    } else if ((ev.kind === "request" || ev.kind === "request_held") && (ev.type === "PLUG" || ev.type === "UNPLUG") && ev.nb_blocks) {
      const [first, n] = blockRange(dev, ev.addr, ev.nb_blocks);
      const already = dev.inflight && dev.inflight.first === first; // held first, then answered
      if (!already && first >= 0 && n <= dev.state.nb_blocks) {
        dev.inflight = { first, saved: g.codes.guest.slice(first, first + n) };
        g.setRange("guest", first, n, CODE.IN_FLIGHT, ev.wall);
      }
    } else if (ev.kind === "response" && dev.inflight) {
      // answered: blocks the device did not change (NACK, ERROR, BUSY) get their state back
      const { first, saved } = dev.inflight; dev.inflight = null;
      dev.held = dev.held.slice(1);
      for (let j = 0; j < saved.length; j++) {
        if (g.codes.guest[first + j] === CODE.IN_FLIGHT) g.setRange("guest", first + j, 1, saved[j]);
      }
    } else if (ev.kind === "config_change") {
      setState(dev, ev.fields, true);
    }
  }
  if (dev && ev.kind === "request_held" && fresh) dev.held = [...dev.held, ev];
  if (dev && ev.kind === "zero_page_read") dev.grid.flash(ev.first_block, ev.count, "zero");
  if (ev.kind === "violation") {
    const vdev = dev || [...model.devices.values()].find((d) => ev.addr >= d.state.addr && ev.addr < d.state.addr + d.state.region_size);
    if (vdev) { const [first] = blockRange(vdev, ev.addr, 1); vdev.grid.flash(first, 1, "violation"); }
    violations++;
    $("devices").dataset.violations = violations;
  }
  if (ev.kind === "runstate") setRunstate(ev.state);
  if (ev.kind === "pace") setPace(ev);
  if (ev.seq <= model.logSeq) return;
  if (ev.kind === "console") { consoleLines([ev.line]); return; }
  const line = describe(ev, dev);
  if (line) logLine(line[0], line[1], line[2]);
  if (dev) updateInflight(dev);
  showExplanation(ev, dev);
}

export function setRunstate(rs) {
  model.runstate = rs; const b = $("runstate"); b.textContent = rs; b.dataset.state = rs;
}

function applyView(v, full) {
  model.viewSeq = v.seq;
  setRunstate(v.runstate);
  if (v.pace) setPace(v.pace);
  for (const [id, d] of Object.entries(v.devices)) {
    const dev = model.devices.get(id); if (!dev) continue;
    if (d.guest) dev.grid.setCodes("guest", b64(d.guest));
    if (d.host) dev.grid.setCodes("host", b64(d.host));
    dev.grid.seq = v.seq;
    // the requests the pace holds right now, as the server saw them at this snapshot: their
    // blocks stay drawn in flight over the snapshot's codes until the device answers
    if (v.pace) dev.held = v.pace.held.filter((h) => h.device === id);
    for (const h of dev.held) {
      if (!h.nb_blocks || (h.type !== "PLUG" && h.type !== "UNPLUG")) continue;
      const [first, n] = blockRange(dev, h.addr, h.nb_blocks);
      if (first < 0 || first + n > dev.state.nb_blocks) continue;
      if (!dev.inflight || dev.inflight.first !== first) dev.inflight = { first, saved: dev.grid.codes.guest.slice(first, first + n) };
      dev.grid.setRange("guest", first, n, CODE.IN_FLIGHT);
    }
    setState(dev, d, !full);
  }
  const nodes = v.nodes.map((n) => `node ${n.node_id}: ${mib(n.boot_ram)} boot + ${mib(n.plugged)} plugged`).join(" · ");
  $("nodes-text").textContent = nodes + ` · host resident ${mib(v.resident)} · server RSS ${mib(v.host_rss)}`;
  const summary = `${v.nodes.length} node${v.nodes.length > 1 ? "s" : ""} · boot ${mib(v.boot_ram_size)} · ` +
    Object.entries(v.devices).map(([id, d]) => `${id} ${mib(d.plugged_size)}/${mib(d.requested_size)}`).join(" · ") +
    (v.cmdline ? ` · cmdline "${v.cmdline}"` : "");
  $("summary").textContent = summary;
  $("devices").dataset.seq = v.seq;
  updateAllocations(v.allocations || []);
  updateNuma(v);
  if (v.sample) addSample(v.sample);
  refreshExplanation();
}

/** A keyframe: everything drawn from scratch (a new connection, a new machine). */
export function onKeyframe(k) {
  const v = k.view;
  model.generation = k.generation; model.logSeq = k.log_seq;
  clearLogs();
  forgetExplanation();
  buildDevices(v);
  renderLegend($("legend"), model.mode);
  for (const ev of k.log) { const dev = ev.device ? model.devices.get(ev.device) : null; const l = describe(ev, dev); if (l) logLine(l[0], l[1], l[2]); }
  consoleLines(k.console);
  setCapabilities(k);
  model.series = k.series.slice();
  if (k.pace) v.pace = k.pace;
  applyView(v, true);
  initCharts();
  document.body.dataset.ready = "1";
  document.body.dataset.generation = k.generation;
  renderRegisters();
}

/** A batch of engine events of this machine's generation. */
export function onBatch(b) {
  if (b.generation !== model.generation) return;
  const now = performance.now();
  for (const ev of b.events) applyEvent(ev, now);
  if (b.events.length) model.logSeq = Math.max(model.logSeq, b.events[b.events.length - 1].seq);
}

/** A view (a fresh snapshot) of this machine's generation. */
export function onView(v) {
  if (v.generation === model.generation) applyView(v, false);
}
