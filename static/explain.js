/* The explanation line beside the grids: for each significant engine event one plain-language
 * sentence saying *why* it happened. Every sentence is derived from the event itself (and the
 * device's state the page already has): nothing here is invented or guessed. */

import { CODE } from "./block-states.js";
import { $ } from "./dom.js";
import { hex, mib } from "./format.js";

/** Contiguous runs of blocks whose guest code is `code`, as "0xA–0xB" address ranges. */
function ranges(dev, code, limit = 3) {
  const codes = dev.grid.codes.guest, bs = dev.state.block_size, base = dev.state.addr;
  const out = [];
  for (let i = 0; i < codes.length && out.length < limit; i++) {
    if (codes[i] !== code) continue;
    let j = i; while (j + 1 < codes.length && codes[j + 1] === code) j++;
    out.push(`${hex(base + i * bs)}–${hex(base + (j + 1) * bs - 1)}`);
    i = j;
  }
  return out;
}

function blocksText(dev, addr, nb) {
  if (!dev) return `${nb} block(s) at ${hex(addr)}`;
  const end = addr + nb * dev.state.block_size - 1;
  return `${nb} block${nb === 1 ? "" : "s"} (${mib(nb * dev.state.block_size)}) ${hex(addr)}–${hex(end)}`;
}

/** The "why" of one event, or null when it needs none. */
export function explain(ev, dev) {
  switch (ev.kind) {
    case "request_held":
      return `${ev.device}: the driver asked to ${ev.type} ${ev.nb_blocks ? blocksText(dev, ev.addr, ev.nb_blocks) : ""}; ` +
        `the teaching pace holds the request in flight ${ev.pace_ms} ms before the device answers (vmemlab, not QEMU)`;
    case "response": {
      const req = ev.request || "";
      if (ev.response === "ACK" && req === "PLUG") return `${ev.device}: the device plugged the blocks — the guest can now add them to a memory block and use them`;
      if (ev.response === "ACK" && req === "UNPLUG") return `${ev.device}: the device unplugged the blocks — the host discarded their memory`;
      if (ev.response === "ACK" && req === "UNPLUG_ALL") return `${ev.device}: UNPLUG_ALL — every block is unplugged, the host discarded all of it`;
      if (ev.response === "NACK") return `${ev.device}: the device refused (NACK): the request goes beyond the requested size or the usable region`;
      if (ev.response === "BUSY") return `${ev.device}: the device is busy (BUSY, e.g. during a migration): the driver retries later`;
      if (ev.response === "ERROR") return `${ev.device}: the device answered ERROR: the request was malformed or out of range`;
      return null;
    }
    case "guest_status": {
      if (!ev.device) return ev.status === "booted" ? "the guest booted: its virtio-mem driver probes each device and plugs what is requested" : null;
      if (ev.status === "stopped-short") {
        const stuck = dev ? ranges(dev, CODE.PLUGGED_UNMOVABLE) : [];
        return stuck.length
          ? `${ev.device}: unplug stopped short: blocks ${stuck.join(", ")} hold unmovable pages, which Linux cannot migrate away`
          : `${ev.device}: unplug stopped short: the remaining plugged blocks hold pages Linux cannot migrate away`;
      }
      if (ev.status === "retrying") return `${ev.device}: the driver could not finish and retries later (as Linux's virtio-mem does with -EAGAIN/-EBUSY)`;
      if (ev.status === "probing") return `${ev.device}: the driver probes the device: reads its config, negotiates features`;
      if (ev.status === "plugging") return `${ev.device}: requested > plugged: the driver plugs blocks one memory block at a time`;
      if (ev.status === "unplugging") return `${ev.device}: requested < plugged: the driver migrates pages out of blocks, then asks to unplug them`;
      if (ev.status === "no-memory") return `${ev.device}: the guest ran out of memory for the memory map (ENOMEM): it cannot add more memory blocks`;
      return null;
    }
    case "config_change": {
      if (!("requested_size" in ev.fields)) return null;
      const size = mib(ev.fields.requested_size);
      const drv = dev ? dev.state.driver_state : "";
      if (drv === "absent" || drv === "disabled" || drv === "failed")
        return `${ev.device}: requested size set to ${size}, but no driver handles the device (${drv}): nothing will be plugged or unplugged, and nothing is in flight`;
      return `${ev.device}: requested size set to ${size}: the device tells the guest with a config-change interrupt; its driver now plugs or unplugs to match`;
    }
    case "zero_page_read":
      return `${ev.device}: the guest read unplugged memory (${ev.count} block${ev.count === 1 ? "" : "s"}): the host answered with the shared zero page, costing no memory`;
    case "unplugged_write":
      return `${ev.device}: the guest wrote to unplugged memory: shipped QEMU lets it through and the host backs those pages again`;
    case "violation":
      return `a ${ev.access} at ${hex(ev.addr)} was refused: ${ev.reason}`;
    case "reset":
      return "system reset: the device unplugged every block; the guest boots again and plugs what is requested";
    case "runstate":
      if (ev.reason === "pause-after-reset") return "paused after the reset (vmemlab's teaching control): everything is unplugged until you continue";
      if (ev.reason === "step-request") return "paused after one answered request (step one request)";
      return null;
    case "device_broken":
      return `${ev.device}: the device is broken (${ev.reason}): it needs a reset`;
    default:
      return null;
  }
}

/** Show `ev`'s explanation (if it has one) in the explanation line. */
let shown = null; // the event the line explains now, and its device

export function showExplanation(ev, dev) {
  const text = explain(ev, dev);
  if (!text) return;
  shown = { ev, dev };
  const line = $("explain");
  line.textContent = text;
  line.dataset.kind = ev.kind;
  line.dataset.seq = ev.seq;
}

/** The line again, from the blocks as a newer view draws them: "stopped short" can arrive
 * before the snapshot that shows which blocks the unplug left behind. Only that sentence
 * reads the grid; the others say what was true when their event happened and stay. */
export function refreshExplanation() {
  if (!shown || shown.ev.kind !== "guest_status" || shown.ev.status !== "stopped-short") return;
  const text = explain(shown.ev, shown.dev);
  if (text && text !== $("explain").textContent) $("explain").textContent = text;
}

/** A new machine: nothing of the old one is explained any more. */
export function forgetExplanation() { shown = null; }
