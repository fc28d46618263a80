/* The virtqueue log (requests → responses, config changes, violations, resets …) and the
 * guest console. */

import { $ } from "./dom.js";
import { hex } from "./format.js";

const MAX_LOG = 200;
const MAX_CONSOLE = 60000, KEEP_CONSOLE = 40000; // characters

export function clearLogs() { $("vq-log").textContent = ""; $("console").textContent = ""; }

/** Append a log line. Lines with the same `group` in a row are one line with a running count
 * (a dump's zero-page reads: "vm0: zero-page reads: 192 blocks (384 reads)"), so repeated
 * events do not push the PLUG/UNPLUG history out of the log. */
const groupBlocks = new WeakMap(); // a grouped line -> the distinct blocks it counts
const MAX_GROUP_BLOCKS = 1 << 16;

function addBlocks(li, group) {
  const set = groupBlocks.get(li);
  for (let b = group.first; b < group.first + group.count && set.size < MAX_GROUP_BLOCKS; b++) set.add(b);
  li.dataset.count = +li.dataset.count + 1; li.dataset.blocks = set.size;
  li.textContent = group.text(+li.dataset.count, set.size);
}

export function logLine(text, cls, group) {
  const ol = $("vq-log");
  const last = ol.lastElementChild;
  if (group && last && last.dataset.group === group.key && groupBlocks.has(last)) {
    addBlocks(last, group);
    return;
  }
  const li = document.createElement("li");
  li.textContent = text; if (cls) li.className = cls;
  if (group) {
    li.dataset.group = group.key; li.dataset.count = 0;
    groupBlocks.set(li, new Set());
    addBlocks(li, group);
  }
  ol.appendChild(li);
  while (ol.childElementCount > MAX_LOG) ol.firstElementChild.remove();
  ol.scrollTop = ol.scrollHeight;
}

export function consoleLines(lines) {
  const pre = $("console");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const text = pre.textContent + lines.map((l) => l + "\n").join("");
  pre.textContent = text.length > MAX_CONSOLE ? text.slice(-KEEP_CONSOLE) : text;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

/** One engine event as a log line [text, class], or null when it makes none. A request is
 * kept on its device (`dev.pendingReq`) and logged with its response. */
export function describe(ev, dev) {
  switch (ev.kind) {
    case "request": {
      if (dev) dev.pendingReq = ev;
      return null;
    }
    case "response": {
      const r = dev && dev.pendingReq; if (dev) dev.pendingReq = null;
      const head = r ? (r.type === "UNPLUG_ALL" ? "UNPLUG_ALL" : `${r.type.padEnd(6)} ${hex(r.addr)} ×${r.nb_blocks}`) : ev.request;
      return [`${ev.device}: ${head} → ${ev.response}${ev.state ? " (" + ev.state + ")" : ""}`, "vq " + ev.response.toLowerCase()];
    }
    case "config_change":
      if (!ev.notified && Object.keys(ev.fields).every((k) => k === "plugged_size")) return null;
      return [`${ev.device}: config ${Object.entries(ev.fields).map(([k, v]) => k + "=" + hex(v)).join(" ")}${ev.notified ? " (notified)" : ""}`, "cfg"];
    case "violation":
      return [`VIOLATION ${ev.access} ${hex(ev.addr)} pc ${hex(ev.pc)}: ${ev.reason}`, "violation"];
    case "unplugged_write":
      return [`${ev.device}: write to unplugged block ${ev.first_block} ×${ev.count} went through (the host backs it again)`, "violation"];
    case "zero_page_read":
      // one line for a run of them (a dump reads every unplugged block, some twice)
      return [null, "zero", { key: `zero:${ev.device}`, first: ev.first_block, count: ev.count,
        text: (n, blocks) => `${ev.device}: zero-page reads: ${blocks} block${blocks === 1 ? "" : "s"}${n > blocks ? ` (${n} reads)` : ""} — unplugged memory read as zeros`}];
    case "request_held":
      return [`${ev.device}: ${ev.type} ${ev.nb_blocks ? hex(ev.addr) + " ×" + ev.nb_blocks : ""} in flight (teaching pace ${ev.pace_ms} ms)`, "meta held"];
    case "pace":
      return [`teaching pace (vmemlab): ${ev.pace_ms ? ev.pace_ms + " ms per request" : "full speed"}${ev.pause_after_reset ? ", pause after reset" : ""}${ev.stepping ? ", stepping one request" : ""}`, "meta"];
    case "reset": return [`RESET (${ev.reason})${ev.cmdline ? " cmdline: " + ev.cmdline : ""}`, "reset"];
    case "device_broken": return [`${ev.device}: BROKEN ${ev.reason}`, "violation"];
    case "runstate": return [`runstate → ${ev.state}${ev.reason ? " (" + ev.reason + ")" : ""}`, "meta"];
    case "migration": return [`migration ${ev.status} ${ev.detail || ""}`, "meta"];
    case "guest_command": return [`guest ${ev.command} → ${ev.status === 0 ? "ok" : ev.status}`, "meta"];
    case "guest_status": return ev.device ? [`${ev.device}: driver ${ev.status}`, "meta"] : [`guest ${ev.status}`, "meta"];
    default: return null;
  }
}
