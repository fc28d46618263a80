/* vmemlab recording player: replays a `vmemlab play --record` file without an emulator.
 *
 * The format is described in docs/scenarios.md. Seeking mirrors scenarios/recording.py:
 * the nearest keyframe at or before t (per machine), then the events after it replayed onto
 * it. The pure functions (parseRecording, applyEvent, stateAt, markers) are exported for
 * tests; initReplay(root) wires the page (templates/replay.html).
 */

export const FORMAT = "vmemlab-recording";
export const VERSION = 1;
/* The only recordings loaded by link: this server's shared ones (webapp/replay.py checks the
 * same pattern; "/\\host/x" or "//host/x" would be another origin to the browser). */
export const SHARED_SRC = /^\/shared\/[A-Za-z0-9_-]{8}\.ndjson$/;

export function parseRecording(text) {
  let header = null;
  const entries = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    let obj;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw new Error(`line ${i + 1}: not JSON`);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new Error(`line ${i + 1}: not a JSON object`);
    }
    if (header === null) {
      if (obj.format !== FORMAT) throw new Error(`line ${i + 1}: not a ${FORMAT} file`);
      if (obj.version !== VERSION) throw new Error(`line ${i + 1}: version ${obj.version} (this player knows ${VERSION})`);
      header = obj;
      continue;
    }
    entries.push(obj);
  }
  if (header === null) throw new Error("empty recording");
  const times = [];
  let last = 0;
  for (const e of entries) { last = Math.max(last, Number(e.t || 0)); times.push(last); }
  return { header, entries, times, duration: times.length ? times[times.length - 1] : 0 };
}

function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function cloneState(state) {
  const s = JSON.parse(JSON.stringify(state));
  for (const dev of Object.values(s.devices || {})) dev.bits = hexToBytes(dev.bitmap);
  return s;
}

/* One recorded bus event onto a state (in place); bitmaps are kept as Uint8Array `bits`. */
export function applyEvent(state, ev) {
  if (ev.seq !== undefined) state.seq = ev.seq;
  const devices = state.devices || {};
  const dev = typeof ev.device === "string" ? devices[ev.device] : undefined;
  switch (ev.kind) {
    case "block_state":
      if (dev) dev.bits.fill(ev.plugged ? 1 : 0, ev.first_block, ev.first_block + ev.count);
      break;
    case "config_change":
      if (dev) {
        for (const key of ["plugged_size", "requested_size", "usable_region_size"]) {
          if (ev.fields && key in ev.fields) dev[key] = ev.fields[key];
        }
        if (ev.fields && "plugged_size" in ev.fields) {
          for (const node of state.nodes || []) {
            if (node.node_id === dev.node) {
              node.plugged = Object.values(devices).filter((d) => d.node === dev.node)
                .reduce((a, d) => a + d.plugged_size, 0);
            }
          }
        }
      }
      break;
    case "guest_status":
      if (dev) dev.driver_state = ev.status;
      else if (ev.status === "booted") state.guest_booted = true;
      else if (ev.status === "fault") state.guest_faults = (state.guest_faults || 0) + 1;
      break;
    case "runstate":
      state.runstate = ev.state;
      break;
    case "reset":
      state.cmdline = ev.cmdline ?? state.cmdline;
      state.guest_booted = false;
      for (const d of Object.values(devices)) d.driver_state = "absent";
      break;
    default:
      break;
  }
}

function upperBound(times, t) {
  let lo = 0, hi = times.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (times[mid] <= t) lo = mid + 1; else hi = mid; }
  return lo;
}

/* Every machine's state at time t: nearest keyframe, then the events after it. */
export function stateAt(rec, t) {
  const end = upperBound(rec.times, t);
  const start = {};
  for (let i = end - 1; i >= 0; i--) {
    const e = rec.entries[i];
    if (e.type === "keyframe" && !(e.machine in start)) start[e.machine] = i;
  }
  const states = {};
  for (const [name, i] of Object.entries(start)) {
    let state = cloneState(rec.entries[i].state);
    for (let k = i + 1; k < end; k++) {
      const e = rec.entries[k];
      if (e.machine !== name) continue;
      if (e.type === "event") applyEvent(state, e.event);
      else if (e.type === "keyframe") state = cloneState(e.state);
    }
    states[name] = state;
  }
  return states;
}

export function markers(rec) {
  return rec.entries.filter((e) => e.type === "say" || (e.type === "marker" && e.marker === "violation"));
}

/* The narration and finished steps up to t (for the side panel). */
export function stepsUntil(rec, t) {
  const end = upperBound(rec.times, t);
  return rec.entries.slice(0, end).filter((e) => e.type === "step");
}

function fmtSize(n) {
  const units = [[2 ** 40, "TiB"], [2 ** 30, "GiB"], [2 ** 20, "MiB"], [2 ** 10, "KiB"]];
  for (const [u, name] of units) {
    if (n >= u) { const v = n / u; return (Number.isInteger(v) ? v : v.toFixed(1)) + " " + name; }
  }
  return n + " B";
}

/* ------------------------------------------------------------------------------ page */

const COLORS = { plugged: "#0072B2", unplugged: "#e4e4e4", outside: "#ffffff", hatch: "#9a9a9a" };

function drawGrid(canvas, dev) {
  const n = dev.nb_blocks;
  const width = canvas.clientWidth || 640;
  const cols = Math.min(n, 128);
  const cell = Math.max(2, Math.floor(width / cols));
  const rows = Math.ceil(n / cols);
  const dpr = window.devicePixelRatio || 1;
  canvas.width = cols * cell * dpr;
  canvas.height = rows * cell * dpr;
  canvas.style.height = rows * cell + "px";
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  const usable = Math.floor(dev.usable_region_size / dev.block_size);
  const gap = cell >= 6 ? 1 : 0;
  let plugged = 0;
  for (let i = 0; i < n; i++) {
    const x = (i % cols) * cell, y = Math.floor(i / cols) * cell;
    if (dev.bits[i]) { plugged++; g.fillStyle = COLORS.plugged; } else if (i >= usable) { g.fillStyle = COLORS.outside; } else { g.fillStyle = COLORS.unplugged; }
    g.fillRect(x, y, cell - gap, cell - gap);
    if (!dev.bits[i] && i >= usable && cell >= 4) {
      g.strokeStyle = COLORS.hatch; g.beginPath(); g.moveTo(x, y + cell - gap); g.lineTo(x + cell - gap, y); g.stroke();
    }
  }
  canvas.dataset.plugged = String(plugged);
  canvas.dataset.blocks = String(n);
}

export function initReplay(root) {
  const $ = (sel) => root.querySelector(sel);
  const ui = {
    file: $("#rec-file"), title: $("#rec-title"), play: $("#rec-play"), step: $("#rec-step"),
    speed: $("#rec-speed"), timeline: $("#rec-timeline"), marks: $("#rec-marks"),
    time: $("#rec-time"), say: $("#rec-say"), steps: $("#rec-steps"), machines: $("#rec-machines"),
    error: $("#rec-error"),
  };
  let rec = null, t = 0, playing = false, lastFrame = 0;

  function render() {
    if (!rec) return;
    ui.time.textContent = `${t.toFixed(2)} s / ${rec.duration.toFixed(2)} s`;
    ui.timeline.value = String(rec.duration ? Math.round((t / rec.duration) * 1000) : 0);
    const states = stateAt(rec, t);
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
          `${id} · node ${dev.node} · requested ${fmtSize(dev.requested_size)} · plugged ${fmtSize(dev.plugged_size)} · usable ${fmtSize(dev.usable_region_size)} · driver ${dev.driver_state}`;
        drawGrid(box.querySelector(`canvas[data-dev="${CSS.escape(id)}"]`), dev);
      }
    }
    const done = stepsUntil(rec, t);
    const says = done.filter((s) => s.kind === "say");
    ui.say.textContent = says.length ? says[says.length - 1].summary : "";
    ui.steps.replaceChildren();
    for (const s of done.slice(-12)) {
      const li = document.createElement("li");
      li.className = s.ok ? "ok" : "fail";
      li.textContent = `${s.index}. ${s.ok ? "✓" : "✗"} ${s.kind} ${s.title}` + (s.kind !== "say" && s.summary ? ` → ${s.summary}` : "");
      ui.steps.appendChild(li);
    }
    root.dataset.t = String(t);
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
    ui.machines.replaceChildren();
    ui.marks.replaceChildren();
    for (const m of markers(rec)) {
      const tick = document.createElement("button");
      tick.type = "button";
      tick.className = "rec-mark " + (m.type === "say" ? "say" : "violation");
      tick.style.left = `${rec.duration ? (m.t / rec.duration) * 100 : 0}%`;
      tick.title = m.type === "say" ? m.text : `violation: ${m.access} at 0x${Number(m.addr).toString(16)}`;
      tick.addEventListener("click", () => { t = m.t; render(); });
      ui.marks.appendChild(tick);
    }
    // open at the first picture of a machine (before it, there is nothing to draw)
    const first = rec.entries.find((e) => e.type === "keyframe");
    t = first ? first.t : 0;
    playing = false;
    ui.play.textContent = "play";
    root.dataset.loaded = "1";
    render();
  }

  function frame(now) {
    if (!playing || !rec) return;
    const dt = lastFrame ? (now - lastFrame) / 1000 : 0;
    lastFrame = now;
    t = Math.min(rec.duration, t + dt * Number(ui.speed.value));
    render();
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
  ui.step.addEventListener("click", () => {
    if (!rec) return;
    const next = rec.entries.find((e, i) => e.type === "step" && rec.times[i] > t);
    t = next ? Number(next.t) : rec.duration;
    render();
  });
  ui.timeline.addEventListener("input", () => {
    if (!rec) return;
    t = (Number(ui.timeline.value) / 1000) * rec.duration;
    render();
  });
  const src = root.dataset.src;
  if (src && !SHARED_SRC.test(src)) {
    ui.error.textContent = `${src}: only a shared recording of this server (/shared/ID.ndjson) can be loaded by link`;
  } else if (src) {
    fetch(src, { credentials: "same-origin" })
      .then((r) => { if (!r.ok) throw new Error(`HTTP ${r.status}`); return r.text(); })
      .then((text) => load(text, src))
      .catch((err) => { ui.error.textContent = `${src}: ${err.message}`; });
  }
  return { load, seek: (x) => { t = x; render(); }, get time() { return t; } };
}

if (typeof document !== "undefined" && document.getElementById("replay")) {
  window.vmemReplay = initReplay(document.getElementById("replay"));
}
