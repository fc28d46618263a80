/* Device cards: per device a header (requested-size slider, plugged, usable, driver) and its
 * grid; the device pickers of the other panels; the tooltip of a hovered block. */

import { state as blockState } from "./block-states.js";
import { $, el } from "./dom.js";
import { MiB, hex, mib } from "./format.js";
import { BlockGrid } from "./grid.js";
import { notice, showError } from "./messages.js";
import { model } from "./model.js";
import { markChanged } from "./registers.js";
import { send, socket } from "./transport.js";

/** Cards and pickers for the devices of a keyframe's view (replacing the old ones). */
export function buildDevices(view) {
  const box = $("device-cards"); box.textContent = "";
  BlockGrid.all.clear(); model.devices.clear(); model.order = [];
  const cfgSel = $("cfg-device"), rogueSel = $("rogue-device"), target = $("alloc-target");
  cfgSel.textContent = ""; rogueSel.textContent = "";
  target.querySelectorAll("option.dev").forEach((o) => o.remove());
  for (const [id, d] of Object.entries(view.devices)) {
    const card = document.createElement("article");
    card.className = "device"; card.dataset.device = id;
    const bs = d.block_size / MiB, max = d.region_size / MiB;
    const reqLabel = `requested size of ${id} in MiB`;
    const range = { min: "0", max: String(max), step: String(bs), "aria-label": reqLabel };
    const canvas = el("canvas", { class: "grid", dataset: { device: id }, tabIndex: 0,
      "aria-label": `blocks of ${id}: ${d.nb_blocks} blocks of ${mib(d.block_size)}` });
    card.append(
      el("header", {},
        el("h2", {}, `node ${d.node} · ${id}`),
        el("label", { class: "req" }, "requested ",
          el("input", Object.assign({ type: "range", class: "req-slider" }, range)), " ",
          el("input", Object.assign({ type: "number", class: "req-number" }, range)), " MiB ",
          el("button", { type: "button", class: "req-set" }, "set")),
        " ", el("span", { class: "stat" }, "plugged ", el("b", { class: "plugged" })),
        " ", el("span", { class: "stat" }, "usable ", el("b", { class: "usable" })),
        " ", el("span", { class: "stat" }, "driver ", el("b", { class: "driver" })),
        " ", el("span", { class: "stat inflight", hidden: true }, "· in flight ·"),
        " ", el("button", { type: "button", class: "zoom", hidden: true,
          title: "A large device draws several blocks per cell (the most telling one's state); zoom in to see every block" }, "zoom in")),
      el("div", { class: "grid-wrap" }, el("ol", { class: "mb-labels", "aria-label": `memory blocks of ${id}` }), canvas));
    box.appendChild(card);
    const grid = new BlockGrid(canvas, d.nb_blocks);
    grid.setMode(model.mode);
    grid.onLayout = () => renderRowLabels(dev);
    BlockGrid.all.add(grid);
    const els = {
      card, slider: card.querySelector(".req-slider"), number: card.querySelector(".req-number"),
      plugged: card.querySelector(".plugged"), usable: card.querySelector(".usable"),
      driver: card.querySelector(".driver"), inflight: card.querySelector(".inflight"),
    };
    const state = Object.assign({}, d);
    delete state.guest; delete state.host; // codes live in the grid
    els.labels = card.querySelector(".mb-labels");
    els.zoom = card.querySelector(".zoom");
    els.zoom.addEventListener("click", () => {
      grid.setZoom(!grid.zoomed);
      card.classList.toggle("zoomed", grid.zoomed);
      els.zoom.textContent = grid.zoomed ? "zoom out" : "zoom in";
    });
    const dev = { id, state, grid, els, pendingReq: null, inflight: null, held: [], editing: false };
    model.devices.set(id, dev); model.order.push(id);
    const setReq = (valueMiB) => {
      // an empty box is no size: say so instead of asking for 0 (which would unplug everything)
      if (typeof valueMiB !== "number" || !Number.isFinite(valueMiB) || valueMiB < 0) {
        showError(`${id}: type a requested size in MiB (0 to ${max}) before pressing set`);
        return;
      }
      send("set_requested_size", { device: id, size: Math.round(valueMiB * MiB) },
        () => notice(`${id}: requested-size ${valueMiB} MiB`));
    };
    const boxValue = () => (els.number.value.trim() === "" ? NaN : +els.number.value);
    els.slider.addEventListener("input", () => { dev.editing = true; els.number.value = els.slider.value; });
    els.slider.addEventListener("change", () => { dev.editing = false; setReq(+els.slider.value); });
    els.number.addEventListener("focus", () => (dev.editing = true));
    els.number.addEventListener("blur", () => (dev.editing = false));
    els.number.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); setReq(boxValue()); } });
    card.querySelector(".req-set").addEventListener("click", () => setReq(boxValue()));
    canvas.addEventListener("mousemove", (e) => hover(dev, e));
    canvas.addEventListener("click", (e) => hover(dev, e)); // a tap on a phone shows the details too
    canvas.addEventListener("mouseleave", () => ($("tooltip").hidden = true));
    for (const sel of [cfgSel, rogueSel]) {
      const o = document.createElement("option"); o.value = id; o.textContent = id; sel.appendChild(o);
    }
    const o = document.createElement("option"); o.value = id; o.className = "dev";
    o.textContent = id + " (node " + d.node + ")"; target.appendChild(o);
  }
}

function updateDeviceText(dev) {
  const s = dev.state, els = dev.els;
  els.plugged.textContent = mib(s.plugged_size);
  els.usable.textContent = mib(s.usable_region_size);
  els.driver.textContent = s.driver_state + (s.broken ? " (broken)" : "");
  updateInflight(dev);
  if (!dev.editing && document.activeElement !== els.slider && document.activeElement !== els.number) {
    els.slider.value = s.requested_size / MiB; els.number.value = s.requested_size / MiB;
  }
  const card = els.card.dataset;
  card.plugged = s.plugged_size; card.requested = s.requested_size; card.usable = s.usable_region_size;
}

/** The in-flight badge: only requests really outstanding -- held by the teaching pace, or
 * sent and not yet answered -- never a mere difference between plugged and requested (an
 * unplug that stopped short, or a guest without a driver, has nothing in flight). */
export function updateInflight(dev) {
  const held = dev.held || [];
  const pending = dev.pendingReq;
  const badge = dev.els.inflight;
  const req = held[0] || pending;
  badge.hidden = !req;
  badge.dataset.count = held.length + (pending && !held.length ? 1 : 0);
  badge.textContent = req ? `· in flight: ${req.type}${req.nb_blocks ? ` ${hex(req.addr)} ×${req.nb_blocks}` : ""} ·` : "";
}

/** Row labels beside the grid: per Linux memory block its address, name and zone. */
export function renderRowLabels(dev) {
  const g = dev.grid, box = dev.els.labels; if (!box) return;
  box.textContent = "";
  const s = dev.state, rows = g.rowBlocks ? g.rows : 0;
  if (dev.els.zoom) {
    dev.els.zoom.hidden = !(g.agg > 1 || g.zoomed);
    dev.els.labels.dataset.agg = g.agg;
  }
  box.hidden = !rows;
  box.style.height = g.canvas.style.height;
  if (!rows) return;
  const byFirst = new Map((s.memory_blocks || []).map((mb) => [mb.first_block, mb]));
  const every = Math.max(1, Math.ceil(11 / g.cell)); // a label needs ~11 px of height
  for (let r = 0; r < rows; r++) {
    const first = r * g.cols * g.agg;
    const li = document.createElement("li");
    li.style.height = g.cell * (r + every <= rows ? every : rows - r) + "px";
    const mb = byFirst.get(first);
    const last = g.mbPerRow > 1 ? byFirst.get(first + (g.mbPerRow - 1) * g.rowBlocks) : null;
    li.dataset.addr = hex(s.addr + first * s.block_size);
    li.textContent = `${hex(s.addr + first * s.block_size)}${mb ? " " + mb.name : ""}${last ? "–" + last.name.replace("memory", "") : ""}`;
    li.title = mb ? `${mb.name}: ${mb.zone === "none" ? "not added" : mb.zone === "offline" ? "offline" : "ZONE_" + mb.zone.toUpperCase()} (${mb.state})` : "not a memory block of the guest yet";
    if (mb) li.dataset.zone = mb.zone;
    box.appendChild(li);
    r += every - 1;
  }
}

/** The guest's memory-block structure (from a view): rows per memory block, their labels. */
export function setStructure(dev) {
  const s = dev.state, per = s.memory_block_size && s.block_size ? s.memory_block_size / s.block_size : 0;
  const key = JSON.stringify(s.memory_blocks || []) + per;
  if (key === dev.structureKey) return;
  dev.structureKey = key;
  if (per >= 1 && Number.isInteger(per)) dev.grid.setRowBlocks(per, (dev.els.labels && dev.els.labels.offsetWidth) || 150);
  renderRowLabels(dev);
}

/** New values of a device's fields (a view's, or a config_change event's); `mark`: show
 * the changed registers as changed. Block codes go to the grid, not here. */
export function setState(dev, fields, mark) {
  for (const [k, v] of Object.entries(fields)) {
    if (k === "guest" || k === "host") continue;
    if (mark && dev.state[k] !== v) markChanged(dev.id, k);
    dev.state[k] = v;
  }
  updateDeviceText(dev);
  if ("memory_blocks" in fields) setStructure(dev);
}

let hoverSeq = 0;
function hover(dev, e) {
  const i = dev.grid.cellAt(e.clientX, e.clientY); const tip = $("tooltip");
  if (i < 0) { tip.hidden = true; return; }
  const addr = dev.state.addr + i * dev.state.block_size;
  const code = dev.grid.cellCode(i);
  tip.hidden = false;
  tip.style.left = Math.min(window.innerWidth - 280, e.clientX + 14) + "px";
  tip.style.top = (e.clientY + 14) + "px";
  const agg = dev.grid.agg;
  tip.textContent = agg > 1
    ? `${dev.id} blocks ${i}–${i + agg - 1} @ ${hex(addr)} (one cell: ${agg} blocks; zoom in for each)\n${blockState(code).label} (the most telling)`
    : `${dev.id} block ${i} @ ${hex(addr)}\n${blockState(code).label}`;
  const my = ++hoverSeq;
  clearTimeout(dev.hoverTimer);
  dev.hoverTimer = setTimeout(() => socket.emit("block_info", { device: dev.id, block: i }, (r) => {
    if (my !== hoverSeq || !r || !r.ok) return;
    tip.textContent = `${r.device} block ${r.block} @ ${hex(r.addr)} (${mib(r.size)})\n` +
      `guest: ${r.guest_state} — movable ${r.movable_pages} / unmovable ${r.unmovable_pages} / free ${r.free_pages} pages` +
      (r.kernel_pages ? ` / kernel ${r.kernel_pages}` : "") + "\n" +
      (r.memory_block ? `${r.memory_block}: ${r.zone === "none" ? "not added" : r.zone === "offline" ? "offline" : "ZONE_" + r.zone.toUpperCase()} (${r.memory_block_state})\n` : r.zone === null ? "" : "outside every memory block\n") +
      `host: ${r.host_state} — ${r.resident === null ? "?" : mib(r.resident)} resident`;
  }), 60);
}
