/* Recordings (`vmemlab play --record`, a session's live recording) in the browser: parse,
 * seek, replay events onto a keyframe. Pure: no DOM, so node runs it against the Python
 * reader (tests/scenarios/test_scenario_replay.py).
 *
 * The format is described in docs/scenarios.md. Seeking mirrors scenarios/recording.py:
 * the nearest keyframe at or before t (per machine), then the events after it replayed onto
 * it. A keyframe's state is the machine state of emulator/snapshot.py (machine_state): the
 * live page's view has the same shape (webapp/view_model.py).
 */

export const FORMAT = "vmemlab-recording";
export const VERSION = 1;

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
  for (const dev of Object.values(s.devices || {})) {
    dev.bits = hexToBytes(dev.bitmap);
    // what the guest held per block (0 nothing, 1 movable, 2 unmovable), if recorded
    dev.held = typeof dev.held === "string" && dev.held.length === dev.bitmap.length ? hexToBytes(dev.held) : null;
  }
  return s;
}

/* One recorded bus event onto a state (in place); bitmaps are kept as Uint8Array `bits`. */
export function applyEvent(state, ev) {
  if (ev.seq !== undefined) state.seq = ev.seq;
  const devices = state.devices || {};
  const dev = typeof ev.device === "string" ? devices[ev.device] : undefined;
  switch (ev.kind) {
    case "block_state":
      if (dev) {
        dev.bits.fill(ev.plugged ? 1 : 0, ev.first_block, ev.first_block + ev.count);
        if (!ev.plugged && dev.held) dev.held.fill(0, ev.first_block, ev.first_block + ev.count);
      }
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
      for (const d of Object.values(devices)) { d.driver_state = "absent"; if (d.held) d.held.fill(0); }
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
  return stateUntil(rec, upperBound(rec.times, t));
}

/** The number of entries up to time t (a position for stateUntil). */
export const positionAt = (rec, t) => upperBound(rec.times, t);

/* Every machine's state after the first `end` entries. */
export function stateUntil(rec, end) {
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

/* The step mode's ticks: positions just after each scenario step and each answered virtqueue
 * request (a "response" event), in order; stepping walks them forward and back. */
export function ticks(rec) {
  const out = [];
  rec.entries.forEach((e, i) => {
    if (e.type === "step" || (e.type === "event" && e.event && e.event.kind === "response")) out.push(i + 1);
  });
  return out;
}

/* What happened in the first `end` entries: narration, steps, virtqueue log, console. */
export function storyUntil(rec, end, keep = 40) {
  const says = [], steps = [], log = [], consoleLines = [];
  for (let i = 0; i < end; i++) {
    const e = rec.entries[i];
    if (e.type === "say") says.push(e);
    else if (e.type === "step") steps.push(e);
    else if (e.type === "event" && e.event) {
      const ev = e.event;
      if (ev.kind === "request" || ev.kind === "response") log.push({ machine: e.machine, ...ev });
      else if (ev.kind === "console" && typeof ev.line === "string") consoleLines.push(ev.line);
      if (log.length > keep * 2) log.splice(0, log.length - keep);
      if (consoleLines.length > keep * 2) consoleLines.splice(0, consoleLines.length - keep);
    }
  }
  return { say: says.length ? says[says.length - 1] : null, steps, log: log.slice(-keep), console: consoleLines.slice(-keep) };
}

/* The narration and finished steps up to t (for the side panel). */
export function stepsUntil(rec, t) {
  const end = upperBound(rec.times, t);
  return rec.entries.slice(0, end).filter((e) => e.type === "step");
}
