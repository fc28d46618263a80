/* One student's machine, read-only, for the teacher: the guest's and the host's view of
 * each device, its sizes and the pushed lesson's goals, polled once a second. The page has
 * no controls, and the server has no route under it that changes anything. */

import { $, el } from "./dom.js";
import { mib } from "./format.js";
import { drawCodes } from "./class_grid.js";

const root = $("student");
const grids = new Map();

function device(d) {
  let g = grids.get(d.id);
  if (!g) {
    const guest = el("canvas", { class: "detail", dataset: { device: d.id, view: "guest" } });
    const host = el("canvas", { class: "detail", dataset: { device: d.id, view: "host" } });
    const caption = el("p", {});
    $("student-devices").append(el("section", { class: "student-device" }, el("h2", {}, d.id), caption,
      el("div", { class: "views" }, el("figure", {}, guest, el("figcaption", {}, "guest view")),
        el("figure", {}, host, el("figcaption", {}, "host view")))));
    g = { guest, host, caption }; grids.set(d.id, g);
  }
  return g;
}

async function poll() {
  try {
    const r = await fetch(root.dataset.state, { credentials: "same-origin" });
    const j = await r.json();
    const s = j.status;
    if (j.ok && s) {
      const age = Date.now() / 1000 - s.t;
      $("student-summary").textContent = age > 5 ? `offline (last seen ${Math.round(age)} s ago)` :
        `${s.runstate}${s.connected ? "" : " (page closed)"} · ${s.allocations || 0} allocation(s) · ${mib(s.resident || 0)} resident` +
        (s.budget && s.budget.machine_limit ? ` of a ${mib(s.budget.machine_limit)} budget` : "");
      root.dataset.runstate = s.runstate;
      for (const d of s.devices || []) {
        const g = device(d);
        g.caption.textContent = `requested ${mib(d.requested_size)}, plugged ${mib(d.plugged_size)} of ${mib(d.region_size)} (${d.driver_state})`;
        drawCodes(g.guest, d.guest, 64, 6);
        drawCodes(g.host, d.host, 64, 6);
      }
      const goals = s.goals;
      $("student-lesson").textContent = goals ? `${goals.kind} “${goals.title}”` : "no lesson pushed";
      const list = $("student-goals"); list.textContent = "";
      for (const x of goals ? goals.goals : []) list.append(el("li", { class: x.reached ? "done" : "" }, (x.reached ? "✓ " : "○ ") + x.title));
    } else if (!j.ok) $("student-summary").textContent = j.error;
  } catch (err) { /* keep polling */ }
  setTimeout(poll, 1000);
}
poll();
