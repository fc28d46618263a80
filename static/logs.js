/* The virtqueue log (requests → responses, config changes, violations, resets …) and the
 * guest console. */

import { $ } from "./dom.js";
import { hex } from "./format.js";

const MAX_LOG = 200;
const MAX_CONSOLE = 60000, KEEP_CONSOLE = 40000; // characters

export function clearLogs() { $("vq-log").textContent = ""; $("console").textContent = ""; }

export function logLine(text, cls) {
  const ol = $("vq-log"); const li = document.createElement("li");
  li.textContent = text; if (cls) li.className = cls; ol.appendChild(li);
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
      return [`${ev.device}: zero-page read of block ${ev.first_block} ×${ev.count}${ev.outside_usable ? " (outside usable)" : ""}`, "zero"];
    case "reset": return [`RESET (${ev.reason})${ev.cmdline ? " cmdline: " + ev.cmdline : ""}`, "reset"];
    case "device_broken": return [`${ev.device}: BROKEN ${ev.reason}`, "violation"];
    case "runstate": return [`runstate → ${ev.state}${ev.reason ? " (" + ev.reason + ")" : ""}`, "meta"];
    case "migration": return [`migration ${ev.status} ${ev.detail || ""}`, "meta"];
    case "guest_command": return [`guest ${ev.command} → ${ev.status === 0 ? "ok" : ev.status}`, "meta"];
    case "guest_status": return ev.device ? [`${ev.device}: driver ${ev.status}`, "meta"] : [`guest ${ev.status}`, "meta"];
    default: return null;
  }
}
