/* The register map: one device's virtio-mem config space, changed fields marked a while. */

import { $, el } from "./dom.js";
import { hex, mib } from "./format.js";
import { model } from "./model.js";

/* virtio_mem_config in the spec's order: register name -> field of the device's state */
export const REGISTERS = [["block_size", "block_size"], ["node_id", "node"], ["addr", "addr"],
  ["region_size", "region_size"], ["usable_region_size", "usable_region_size"],
  ["plugged_size", "plugged_size"], ["requested_size", "requested_size"]];
const FIELDS = new Set(REGISTERS.map(([, field]) => field));
const MARKED_MS = 2500;

const changedAt = new Map(); // "device.field" -> when it last changed

/** Note that a device's field changed now (only register fields are marked). */
export function markChanged(id, field) {
  if (FIELDS.has(field)) changedAt.set(id + "." + field, performance.now());
}

export function renderRegisters() {
  const id = $("cfg-device").value || model.order[0];
  const dev = model.devices.get(id); if (!dev) return;
  const tbody = $("config-table").tBodies[0]; tbody.textContent = "";
  const now = performance.now();
  for (const [name, field] of REGISTERS) {
    const tr = document.createElement("tr"); tr.dataset.field = name;
    const t = changedAt.get(id + "." + field);
    if (t && now - t < MARKED_MS) tr.className = "changed";
    const v = dev.state[field];
    tr.append(el("th", {}, name), el("td", { class: "mono" }, name === "node_id" ? v : hex(v)),
      el("td", {}, name === "node_id" || name === "addr" ? "" : mib(v)));
    tbody.appendChild(tr);
  }
}

export function initRegisters() {
  $("cfg-device").addEventListener("change", renderRegisters);
  setInterval(renderRegisters, 500);
}
