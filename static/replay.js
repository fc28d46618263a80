/* vmemlab recording player: replays a recording without an emulator (templates/replay.html).
 *
 * Parsing and seeking are recording.js's; the grids and the legend are the live page's
 * (grid.js, legend.js), in the "device" view: a recording keeps each device's plugged bitmap,
 * not what the guest or the host did with a block.
 */

import { CODE } from "./block-states.js";
import { sizeText } from "./format.js";
import { BlockGrid } from "./grid.js";
import { renderLegend } from "./legend.js";
import { markers, parseRecording, positionAt, stateUntil, storyUntil, ticks } from "./recording.js";

/* The only recordings loaded by link: this server's shared ones (webapp/replay.py checks the
 * same pattern; "/\\host/x" or "//host/x" would be another origin to the browser). */
export const SHARED_SRC = /^\/shared\/[A-Za-z0-9_-]{8}\.ndjson$/;
/** this browser session's live recording (webapp/api.py), the sandbox's "export recording" */
const SESSION_RECORDING = "/api/machine/recording";

/* Recordings whose keyframes keep what the guest held per block are drawn in the live page's
 * guest colours (free / movable / unmovable: the "replay" view); older ones only know the
 * device's bitmap (the "device" view). */
const grids = new WeakMap(); // canvas -> its BlockGrid
const HELD = [CODE.PLUGGED_FREE, CODE.PLUGGED_MOVABLE, CODE.PLUGGED_UNMOVABLE];

export const viewOf = (dev) => (dev.held ? "replay" : "device");

/* One device's blocks from its bitmap, drawn at once (the player draws as it seeks). */
function drawDevice(canvas, dev) {
  const view = viewOf(dev);
  let grid = grids.get(canvas);
  if (!grid || grid.nb !== dev.nb_blocks || grid.mode !== view) {
    grid = new BlockGrid(canvas, dev.nb_blocks, { views: [view], fitWidth: true });
    grids.set(canvas, grid);
  }
  const usable = Math.floor(dev.usable_region_size / dev.block_size);
  const codes = new Uint8Array(dev.nb_blocks);
  for (let i = 0; i < codes.length; i++) {
    const plugged = dev.held ? (HELD[dev.held[i]] ?? CODE.PLUGGED_FREE) : CODE.PLUGGED;
    codes[i] = dev.bits[i] ? plugged : i >= usable ? CODE.OUTSIDE_USABLE : CODE.UNPLUGGED;
  }
  grid.setCodes(view, codes);
  grid.drawNow();
  return view;
}

export function initReplay(root) {
  const $ = (sel) => root.querySelector(sel);
  const ui = {
    file: $("#rec-file"), title: $("#rec-title"), play: $("#rec-play"), step: $("#rec-step"),
    speed: $("#rec-speed"), timeline: $("#rec-timeline"), marks: $("#rec-marks"),
    time: $("#rec-time"), say: $("#rec-say"), steps: $("#rec-steps"), machines: $("#rec-machines"),
    error: $("#rec-error"), legend: $("#rec-legend"), back: $("#rec-back"), tick: $("#rec-tick"),
    log: $("#rec-log"), console: $("#rec-console"), mine: $("#rec-mine"),
  };
  let legendView = "device";
  renderLegend(ui.legend, legendView, []);
  // the position is a number of entries (pos), the time is where it lies (t)
  let rec = null, t = 0, pos = 0, home = 0, marks = [], playing = false, lastFrame = 0;

  const timeOf = (p) => (p > 0 ? rec.times[p - 1] : 0);
  function seekTime(x) { t = x; pos = positionAt(rec, t); render(); }
  function seekPos(p) { pos = p; t = timeOf(p); render(); }

  function render() {
    if (!rec) return;
    ui.time.textContent = `${t.toFixed(2)} s / ${rec.duration.toFixed(2)} s`;
    ui.timeline.value = String(rec.duration ? Math.round((t / rec.duration) * 1000) : 0);
    const k = marks.filter((m) => m <= pos).length;
    ui.tick.textContent = `step ${k} / ${marks.length}`;
    ui.back.disabled = pos <= home;
    ui.step.disabled = pos >= rec.entries.length;
    const states = stateUntil(rec, pos);
    for (const [name, state] of Object.entries(states)) {
      let box = ui.machines.querySelector(`[data-machine="${CSS.escape(name)}"]`);
      if (!box) {
        box = document.createElement("section");
        box.className = "rec-machine";
        box.dataset.machine = name;
        ui.machines.appendChild(box);
      }
      const devs = Object.entries(state.devices || {});
      if (box.querySelectorAll("canvas").length !== devs.length) {
        // built from nodes: a machine or device name is text, never markup
        const badge = document.createElement("span");
        badge.className = "badge";
        const h2 = document.createElement("h2");
        h2.append(document.createTextNode(name + " "), badge);
        const rows = devs.map(([id]) => {
          const row = document.createElement("div");
          row.className = "rec-dev";
          const label = document.createElement("div");
          label.className = "rec-dev-label";
          label.dataset.dev = id;
          const canvas = document.createElement("canvas");
          canvas.dataset.dev = id;
          row.append(label, canvas);
          return row;
        });
        box.replaceChildren(h2, ...rows);
      }
      box.querySelector(".badge").textContent = state.runstate;
      for (const [id, dev] of devs) {
        box.querySelector(`.rec-dev-label[data-dev="${CSS.escape(id)}"]`).textContent =
          `${id} · node ${dev.node} · requested ${sizeText(dev.requested_size)} · plugged ${sizeText(dev.plugged_size)} · usable ${sizeText(dev.usable_region_size)} · driver ${dev.driver_state}`;
        const view = drawDevice(box.querySelector(`canvas[data-dev="${CSS.escape(id)}"]`), dev);
        if (view !== legendView) { legendView = view; renderLegend(ui.legend, view, []); }
      }
    }
    const story = storyUntil(rec, pos);
    const done = story.steps;
    ui.say.textContent = story.say ? story.say.text : "";
    ui.log.textContent = story.log.map((ev) => ev.kind === "request"
      ? `→ ${ev.device} ${ev.type} 0x${Number(ev.addr).toString(16)} ×${ev.nb_blocks}`
      : `← ${ev.device} ${ev.response}${ev.state ? " " + ev.state : ""}`).join("\n");
    ui.log.scrollTop = ui.log.scrollHeight;
    ui.console.textContent = story.console.join("\n");
    ui.console.scrollTop = ui.console.scrollHeight;
    ui.steps.replaceChildren();
    for (const s of done.slice(-12)) {
      const li = document.createElement("li");
      li.className = s.ok ? "ok" : "fail";
      li.textContent = `${s.index}. ${s.ok ? "✓" : "✗"} ${s.kind} ${s.title}` + (s.kind !== "say" && s.summary ? ` → ${s.summary}` : "");
      ui.steps.appendChild(li);
    }
    root.dataset.t = String(t);
    root.dataset.tick = String(k);
  }

  function load(text, name) {
    try {
      rec = parseRecording(text);
    } catch (err) {
      ui.error.textContent = `${name}: ${err.message}`;
      return;
    }
    ui.error.textContent = "";
    ui.title.textContent = rec.header.title;
    marks = ticks(rec);
    ui.machines.replaceChildren();
    ui.marks.replaceChildren();
    for (const m of markers(rec)) {
      const tick = document.createElement("button");
      tick.type = "button";
      tick.className = "rec-mark " + (m.type === "say" ? "say" : "violation");
      tick.style.left = `${rec.duration ? (m.t / rec.duration) * 100 : 0}%`;
      tick.title = m.type === "say" ? m.text : `violation: ${m.access} at 0x${Number(m.addr).toString(16)}`;
      tick.addEventListener("click", () => seekTime(m.t));
      ui.marks.appendChild(tick);
    }
    // open at the first picture of a machine (before it, there is nothing to draw)
    const first = rec.entries.findIndex((e) => e.type === "keyframe");
    playing = false;
    ui.play.textContent = "play";
    root.dataset.loaded = "1";
    home = first + 1;
    seekPos(home);
  }

  function frame(now) {
    if (!playing || !rec) return;
    const dt = lastFrame ? (now - lastFrame) / 1000 : 0;
    lastFrame = now;
    seekTime(Math.min(rec.duration, t + dt * Number(ui.speed.value)));
    if (t >= rec.duration) { playing = false; ui.play.textContent = "play"; return; }
    requestAnimationFrame(frame);
  }

  ui.file.addEventListener("change", () => {
    const f = ui.file.files[0];
    if (f) f.text().then((text) => load(text, f.name));
  });
  ui.play.addEventListener("click", () => {
    if (!rec) return;
    playing = !playing;
    ui.play.textContent = playing ? "pause" : "play";
    if (playing) { if (t >= rec.duration) t = 0; lastFrame = 0; requestAnimationFrame(frame); }
  });
  /* step mode: one tick per scenario step or answered virtqueue request, whatever the clock */
  function stepBy(dir) {
    if (!rec) return;
    playing = false; ui.play.textContent = "play";
    if (dir > 0) {
      const next = marks.find((m) => m > pos);
      seekPos(next ?? rec.entries.length);
    } else {
      const before = marks.filter((m) => m < pos && m > home);
      seekPos(before.length ? before[before.length - 1] : home);
    }
  }
  ui.step.addEventListener("click", () => stepBy(1));
  ui.back.addEventListener("click", () => stepBy(-1));
  root.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    if (e.key === "ArrowRight") { e.preventDefault(); stepBy(1); }
    if (e.key === "ArrowLeft") { e.preventDefault(); stepBy(-1); }
  });
  ui.timeline.addEventListener("input", () => {
    if (!rec) return;
    seekTime((Number(ui.timeline.value) / 1000) * rec.duration);
  });
  window.addEventListener("resize", () => {
    for (const canvas of ui.machines.querySelectorAll("canvas")) {
      const grid = grids.get(canvas);
      if (grid) { grid.layout(); grid.drawNow(); }
    }
  });
  /* a recording of this server (a shared one, or this session's own): a refusal shows its
     JSON error ("this session has no recording"), anything else its HTTP status */
  function loadFrom(url, label) {
    ui.error.textContent = "";
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(async (r) => {
        if (r.ok) return r.text();
        const body = await r.json().catch(() => null);
        throw new Error(body && typeof body.error === "string" ? body.error : `HTTP ${r.status}`);
      })
      .then((text) => load(text, label))
      .catch((err) => { ui.error.textContent = `${label}: ${err.message}`; });
  }
  ui.mine.addEventListener("click", () => loadFrom(SESSION_RECORDING, "this session's recording"));
  const src = root.dataset.src;
  if (src && !SHARED_SRC.test(src)) {
    ui.error.textContent = `${src}: only a shared recording of this server (/shared/ID.ndjson) can be loaded by link`;
  } else if (src) {
    loadFrom(src, src);
  }
  return { load, seek: seekTime, step: stepBy, get time() { return t; }, get position() { return pos; } };
}

const root = document.getElementById("replay");
if (root) initReplay(root);
